"""Training throughput of in-memory arrays against fitq's file-backed RowStream.

From the repository root:

    .venv/bin/python bench/throughput.py

The same small Keras model (an MLP: Dense(64, relu) -> Dense(10, softmax), adam, sparse
categorical crossentropy) trains on the same data (random float32 rows, written once to a
temporary ``.npy``; random integer labels) in several configurations:

- ``in-memory``: the arrays loaded with ``np.load`` and passed to ``model.fit`` (batch 256,
  ``shuffle=True``), as fitq's runner does for data within the memory budget;
- ``stream``: ``worker.training.streaming.RowStream`` over ``NpyRows`` (blocks read with
  ``preadv``, shuffled by blocks and windows, a ``tf.data`` pipeline that prefetches), with
  the buffer a 2 GiB memory budget gives, passed to ``model.fit`` the way
  ``DiskArrays.fit_inputs`` (``worker.training.inputs``) does (pass after pass without
  end, ``steps_per_epoch`` the batches of one pass);
- ``pydataset wN``: the loader fitq had before, for comparison: a ``keras.utils.PyDataset``
  that reads each batch's rows with ``NpyRows.rows`` (one ``pread`` per run of
  consecutive rows of a full seeded permutation) with ``workers=N`` threads.

Each measurement runs in a fresh Python process (so that each one's memory figure starts
clean): seed (``keras.utils.set_random_seed`` and op determinism, as the runner does),
build, compile, load or open the data, then one ``fit`` of 1 + E epochs; the first epoch
(graph tracing, queue start-up) is not counted, and throughput is samples x E over the time
from the end of epoch 1 to the end of the last epoch. The configurations run R times, the
order reversed every round. The peak RSS growth is the kernel's high-water mark
(``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs`` just after the
model is compiled) minus ``VmRSS`` at that moment; it covers the data load and the whole fit.

The CPU used by every other process on the machine during each timed window is measured too
(``/proc/stat`` busy time minus the measured process tree's own CPU time), as is the load
average. The results replace the section of ``docs/benchmarks.md`` between the
``bench:throughput`` markers (appended at the end of the file the first time); nothing else in
that file is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from typing_extensions import override

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.record import DOC, machine, write_section  # noqa: E402 - needs ROOT on the path

BEGIN_MARK = "<!-- bench:throughput:begin -->"
END_MARK = "<!-- bench:throughput:end -->"
SEED = 1234

# name -> (loader, workers)
CONFIGS: dict[str, tuple[str, int]] = {
    "in-memory": ("memory", 0),
    "stream": ("stream", 1),
    "pydataset w1": ("pydataset", 1),
    "pydataset w2": ("pydataset", 2),
}
DESCRIPTIONS = {
    "in-memory": "in memory: numpy arrays to `model.fit` (batch 256, `shuffle=True`)",
    "stream": "file-backed: `RowStream` (blocks, windows, `tf.data` prefetch)",
    "pydataset w1": "file-backed, before: `PyDataset` reading each batch's rows, `workers=1`",
    "pydataset w2": "file-backed, before: `PyDataset` reading each batch's rows, `workers=2`",
}

# Lines of a child's stderr that are TensorFlow's usual start-up chatter, not findings.
NOISE = re.compile(
    r"cuda|cuInit|oneDNN|cpu_feature_guard|absl::InitializeLog|rebuild TensorFlow|"
    r"AVX|TF_ENABLE_ONEDNN_OPTS|use_unbounded_threadpool|computation_placer|"
    r"Unable to register cu|GPU will not be used",
    re.IGNORECASE,
)


def results_table_head(info: dict[str, str]) -> list[str]:
    """The machine's table and the head of the results table, for this benchmark's
    section and ``bench/image_throughput.py``'s."""
    return [
        "| machine | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in info.items()],
        "",
        "| configuration | samples/s (median) | ratio to in-memory | peak RSS growth "
        "(median) | runs: samples/s | other processes (cores) |",
        "|---|---|---|---|---|---|",
    ]


def log(msg: str) -> None:
    print(f"[throughput {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- CPU and memory

ME = psutil.Process()


def rss_kb() -> int:
    return int(ME.memory_info().rss) // 1024


def peak_rss_kb() -> int:
    """The kernel's high-water mark of this process's RSS (``VmHWM``), which psutil does
    not report."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise KeyError("VmHWM")


def system_busy_s() -> float:
    """CPU seconds all CPUs have spent busy since boot (everything but idle and iowait)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + t.steal)


def tree_cpu_s() -> float:
    """CPU seconds of this process, its reaped children and its live children."""
    t = ME.cpu_times()
    total = float(t.user + t.system + t.children_user + t.children_system)
    for kid in ME.children():
        try:
            k = kid.cpu_times()
        except psutil.Error:
            continue
        total += k.user + k.system
    return total


# --------------------------------------------------------------------------- child


# long: one measured training process, its steps timed in order
def child(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    data = Path(args.data)
    n_features = int(np.load(data / "x.npy", mmap_mode="r").shape[1])
    model = keras.Sequential(
        [
            keras.Input((n_features,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")

    base_rss = rss_kb()
    hwm_reset = True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        hwm_reset = False
    sampled = [base_rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            sampled[0] = max(sampled[0], rss_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    t_load = time.perf_counter()
    y = np.load(data / "y.npy")
    inputs, n = fit_inputs(args.child, data, y, args.batch)
    load_s = time.perf_counter() - t_load

    marks: list[tuple[float, float, float]] = []  # (wall, system busy, own tree CPU)

    class Timer(keras.callbacks.Callback):  # type: ignore[misc]
        @override
        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            marks.append((time.perf_counter(), system_busy_s(), tree_cpu_s()))

        @override
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            marks.append((time.perf_counter(), system_busy_s(), tree_cpu_s()))

    history = model.fit(**inputs, epochs=1 + args.epochs, verbose=0, callbacks=[Timer()])
    done.set()
    sampler.join()
    end_rss = rss_kb()
    peak = peak_rss_kb() if hwm_reset else sampled[0]
    (w0, b0, c0), (w1, b1, c1) = marks[1], marks[-1]
    wall = w1 - w0
    result = {
        "config": args.child,
        "samples": n,
        "epochs_timed": args.epochs,
        "timed_s": wall,
        "samples_per_s": n * args.epochs / wall,
        "warmup_epoch_s": marks[1][0] - marks[0][0],
        "epoch_s": [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)],
        "load_s": load_s,
        "own_cores": (c1 - c0) / wall,
        "other_cores": max(0.0, (b1 - b0) - (c1 - c0)) / wall,
        "base_rss_mb": base_rss / 1024,
        "peak_growth_mb": (peak - base_rss) / 1024,
        "sampled_peak_growth_mb": (sampled[0] - base_rss) / 1024,
        "end_growth_mb": (end_rss - base_rss) / 1024,
        "rss_method": "VmHWM" if hwm_reset else "VmRSS sampled every 10 ms",
        "final_loss": float(history.history["loss"][-1]),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def fit_inputs(config: str, data: Path, y: np.ndarray, batch: int) -> tuple[dict[str, Any], int]:
    """``model.fit``'s data arguments for one configuration, and the number of samples."""
    import keras

    from worker.training.streaming import NpyRows, RowStream, stream_bytes

    loader, workers = CONFIGS[config]
    if loader == "memory":
        x = np.load(data / "x.npy")
        return {"x": x, "y": y, "batch_size": batch, "shuffle": True}, len(x)
    rows = NpyRows(data / "x.npy")
    if loader == "stream":
        stream = RowStream(
            rows, y, batch_size=batch, shuffle=True, seed=SEED, buffer_bytes=stream_bytes(2 << 30)
        )
        ds = stream.dataset(repeat=True)
        return {"x": ds, "shuffle": False, "steps_per_epoch": stream.n_batches}, len(rows)

    class Rows(keras.utils.PyDataset):  # type: ignore[misc]
        """fitq's loader before RowStream: a new seeded permutation every epoch."""

        def __init__(self) -> None:
            super().__init__(workers=workers, max_queue_size=max(2, 2 * workers))
            self.rng = np.random.default_rng(SEED)
            self.indices = self.rng.permutation(len(rows))

        def __len__(self) -> int:
            return -(-len(rows) // batch)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            picked = self.indices[i * batch : (i + 1) * batch]
            return rows.rows(picked), y[picked]

        def on_epoch_end(self) -> None:
            self.rng.shuffle(self.indices)

    return {"x": Rows(), "shuffle": False}, len(rows)


# --------------------------------------------------------------------------- parent


def write_data(folder: Path, samples: int, features: int) -> float:
    rng = np.random.default_rng(SEED)
    x = np.lib.format.open_memmap(
        folder / "x.npy", mode="w+", dtype=np.float32, shape=(samples, features)
    )
    for start in range(0, samples, 10_000):
        stop = min(samples, start + 10_000)
        x[start:stop] = rng.standard_normal((stop - start, features), dtype=np.float32)
    x.flush()
    nbytes = float(x.nbytes)
    del x
    np.save(folder / "y.npy", rng.integers(0, 10, samples, dtype=np.int64))
    return nbytes


def loader_cost(folder: Path, batch: int, batches: int = 200) -> dict[str, float]:
    """Milliseconds per shuffled batch: NpyRows.rows, the bare pread calls it makes, and
    RowStream's window reads (a pass of them over the batches of a pass)."""
    from worker.training.streaming import NpyRows, RowStream

    rows = NpyRows(folder / "x.npy")
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(rows))
    batches = min(batches, len(rows) // batch)
    picks = [perm[i * batch : (i + 1) * batch] for i in range(batches)]
    t0 = time.perf_counter()
    for idx in picks:
        rows.rows(idx)
    rows_ms = (time.perf_counter() - t0) / batches * 1e3
    fd = os.open(folder / "x.npy", os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for idx in picks:
            for i in idx:
                os.pread(fd, rows.row_bytes, rows.offset + int(i) * rows.row_bytes)
        pread_ms = (time.perf_counter() - t0) / batches * 1e3
    finally:
        os.close(fd)
    stream = RowStream(rows, np.zeros(len(rows)), batch_size=batch, shuffle=True, seed=SEED)
    t0 = time.perf_counter()
    for w in range(stream.order.n_windows):
        stream.read_window(0, w)
    window_ms = (time.perf_counter() - t0) / stream.n_batches * 1e3
    return {
        "rows_ms": rows_ms,
        "pread_ms": pread_ms,
        "window_ms": window_ms,
        "window_mb": stream.window_rows * rows.row_bytes / 1e6,
        "block_rows": stream.order.block_rows,
        "windows": stream.order.n_windows,
    }


def other_cores(seconds: float) -> float:
    busy0, own0, t0 = system_busy_s(), tree_cpu_s(), time.perf_counter()
    time.sleep(seconds)
    busy1, own1, t1 = system_busy_s(), tree_cpu_s(), time.perf_counter()
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)


def wait_quiet(limit_s: float) -> float:
    """Waits up to limit_s for other processes to use under 0.3 cores; returns their use."""
    deadline = time.monotonic() + limit_s
    while True:
        used = other_cores(2.0)
        if used < 0.3 or time.monotonic() >= deadline:
            return used
        log(f"other processes use {used:.2f} cores; waiting for a quieter machine")


def run_child(config: str, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        config,
        "--data",
        str(data),
        "--epochs",
        str(args.epochs),
        "--batch",
        str(args.batch),
    ]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=args.child_timeout,
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return {
            "config": config,
            "error": f"timed out after {args.child_timeout} s",
            "stderr": filter_stderr(err),
            "process_s": time.perf_counter() - t0,
        }
    elapsed = time.perf_counter() - t0
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    problems = filter_stderr(proc.stderr)
    if proc.returncode != 0 or not found:
        tail = proc.stderr.strip().splitlines()[-15:]
        return {
            "config": config,
            "error": f"exit {proc.returncode}",
            "stderr": problems,
            "tail": tail,
            "process_s": elapsed,
        }
    result: dict[str, Any] = json.loads(found[-1][len("RESULT ") :])
    result["stderr"] = problems
    result["process_s"] = elapsed
    return result


def filter_stderr(text: str) -> list[str]:
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return [ln for ln in lines if not NOISE.search(ln)]


def fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def summarize(results: list[dict[str, Any]], configs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in configs:
        ok = [r for r in results if r["config"] == name and "error" not in r]
        bad = [r for r in results if r["config"] == name and "error" in r]
        if not ok:
            out[name] = {"ok": [], "bad": bad}
            continue
        out[name] = {
            "ok": ok,
            "bad": bad,
            "rate": statistics.median(r["samples_per_s"] for r in ok),
            "rates": [r["samples_per_s"] for r in ok],
            "growth": statistics.median(r["peak_growth_mb"] for r in ok),
            "growths": [r["peak_growth_mb"] for r in ok],
            "other": statistics.median(r["other_cores"] for r in ok),
            "own": statistics.median(r["own_cores"] for r in ok),
        }
    return out


# long: renders the throughput report; its lines read in order
def render(
    info: dict[str, str],
    args: argparse.Namespace,
    summary: dict[str, dict[str, Any]],
    results: list[dict[str, Any]],
    env: dict[str, Any],
    configs: list[str],
) -> str:
    base = summary.get("in-memory", {}).get("rate")
    rss_methods = sorted({r["rss_method"] for r in results if "error" not in r})
    mb = env["nbytes"] / 1e6
    lines = [
        BEGIN_MARK,
        "",
        "## Training throughput: in memory vs file-backed (`RowStream`)",
        "",
        "Written by `bench/throughput.py`; rerunning it replaces this section only. Command:",
        "",
        "    .venv/bin/python bench/throughput.py",
        "",
        f"**What is measured.** Training throughput (samples/s) of one small model, an MLP "
        f"({args.features} float32 inputs -> Dense(64, relu) -> Dense(10, softmax), adam, "
        f"sparse categorical crossentropy, batch {args.batch}) on the same data "
        f"({args.samples:,} random rows x {args.features} features = {mb:.0f} MB, written "
        f"once to a temporary `.npy` with `np.lib.format.open_memmap`; random labels 0-9), "
        f"fed either as numpy arrays to `model.fit` (what fitq's runner does for data within "
        f"`FITQ_WORKER_MEMORY_BUDGET`) or through `worker.training.streaming.RowStream` "
        f"over `NpyRows` (what it does for larger data), built and passed as "
        f"`DiskArrays.fit_inputs` does (the stream shuffles, by blocks of "
        f"{env['block_rows']:,} rows and windows of {env['window_mb']:.0f} MB, "
        f"{env['windows']} windows a pass, the buffer a 2 GiB budget gives; `fit` gets "
        f"`shuffle=False` and `steps_per_epoch`), or, for comparison, through the loader "
        f"fitq had before (a `keras.utils.PyDataset` reading each batch's rows of a full "
        f"permutation with `NpyRows.rows`, one `pread` per run of consecutive rows). Each "
        f"measurement is a fresh Python process: `keras.utils.set_random_seed` and op "
        f"determinism (as the runner), build, compile, load the arrays or open the file, "
        f"then one `fit` of 1 + {args.epochs} epochs; the first epoch (tracing, queue "
        f"start-up) is not counted, throughput = samples x {args.epochs} / time from the "
        f"end of epoch 1 to the end of the last epoch. Each configuration ran "
        f"{args.repeats} times, in alternating order (forward, reversed, forward, ...); the "
        f"table gives the median. The ratio is against the in-memory median of the same run. "
        f"Peak RSS growth: the training process's peak resident memory from just after "
        f"`compile` to the end of `fit` (covering the data load), minus its RSS at that "
        f"moment; measured with {' / '.join(rss_methods) or 'n/a'} (`VmHWM` is the "
        f"kernel's high-water mark in `/proc/self/status`, reset by writing 5 to "
        f"`/proc/self/clear_refs`; the details also give a 10 ms `VmRSS` sampler's peak). "
        f"The `.npy` file was just written, so the reads come from the page cache, not "
        f"from the disk: these figures are the loader's CPU cost, not disk speed. For "
        f"reference, in the parent process before the runs, `NpyRows.rows` took "
        f"{env['rows_ms']:.2f} ms per shuffled batch of {args.batch} rows, of which "
        f"{env['pread_ms']:.2f} ms is the bare `os.pread` calls (one per row: shuffled rows "
        f"are rarely contiguous); `RowStream.read_window` (the blocks' reads, the shuffle "
        f"within the window, the labels) took {env['window_ms']:.2f} ms per batch "
        f"(a pass of windows over a pass's batches).",
        "",
        *results_table_head(info),
    ]
    for name in configs:
        s = summary[name]
        if not s["ok"]:
            err = "; ".join(sorted({r["error"] for r in s["bad"]}))
            lines.append(f"| {DESCRIPTIONS[name]} | failed: {err} | | | | |")
            continue
        ratio = f"{s['rate'] / base:.2f}" if base else "n/a"
        runs = ", ".join(fmt_rate(v) for v in s["rates"])
        if s["bad"]:
            runs += f" ({len(s['bad'])} failed)"
        lines.append(
            f"| {DESCRIPTIONS[name]} | {fmt_rate(s['rate'])} | {ratio} | "
            f"{s['growth']:.0f} MB | {runs} | {s['other']:.2f} |"
        )
    lines += [
        "",
        f"Load: the 1/5/15-minute load average was {env['load_before']} before and "
        f"{env['load_after']} after the run; other processes used {env['quiet']:.2f} cores "
        f"(of {os.cpu_count()}) just before it and, per configuration, the median in the "
        f"last column during the timed epochs (`/proc/stat` busy time minus the measured "
        f"process tree's own CPU). The run took {env['total_s']:.0f} s.",
        "",
        "Details per run (in run order; epoch times include the untimed first epoch):",
        "",
    ]
    for r in results:
        if "error" in r:
            lines.append(f"- {r['config']}: **failed**, {r['error']}")
            continue
        epochs = ", ".join(f"{e:.2f}" for e in r["epoch_s"])
        lines.append(
            f"- {r['config']}: {fmt_rate(r['samples_per_s'])} samples/s; epochs {epochs} s; "
            f"own process tree {r['own_cores']:.2f} cores, others {r['other_cores']:.2f}; "
            f"peak RSS growth {r['peak_growth_mb']:.0f} MB (sampled "
            f"{r['sampled_peak_growth_mb']:.0f} MB, at the end {r['end_growth_mb']:.0f} MB); "
            f"data load {r['load_s'] * 1000:.0f} ms; final loss {r['final_loss']:.4f}"
        )
    problems: dict[str, int] = {}
    for r in results:
        for ln in r.get("stderr", []):
            key = f"{r['config']}: {ln[:200]}"
            problems[key] = problems.get(key, 0) + 1
    lines.append("")
    if problems:
        lines += [
            "Warnings and errors on the processes' stderr (count x line; TensorFlow's "
            "start-up chatter about CUDA and CPU features left out):",
            "",
            "```",
        ]
        lines += [f"{n:3d} x {k}" for k, n in list(problems.items())[:40]]
        lines += ["```", ""]
    else:
        lines += [
            "No warnings or errors on the processes' stderr (TensorFlow's start-up "
            "chatter about CUDA and CPU features left out).",
            "",
        ]
    lines += ["**Interpretation.** " + interpret(summary, env), "", END_MARK]
    return "\n".join(lines)


def interpret(summary: dict[str, dict[str, Any]], env: dict[str, Any]) -> str:
    """Plain reading of the figures, generated from them (kept to what they show)."""
    base = summary.get("in-memory", {}).get("rate")
    if not base:
        return "The in-memory baseline failed, so no ratio can be given."
    mem = summary["in-memory"]
    rows = {k: v for k, v in summary.items() if k != "in-memory" and v["ok"]}
    if not rows:
        return "Every file-backed configuration failed."
    best = max(rows, key=lambda k: rows[k]["rate"])
    text = (
        f"Training from the file reaches at best {rows[best]['rate'] / base:.2f}x the "
        f"in-memory throughput ({best})."
    )
    if "stream" in rows:
        st = rows["stream"]
        text += (
            f" `RowStream` reaches {st['rate'] / base:.2f} (goal 0.9), using "
            f"{st['own']:.2f} cores (in memory {mem['own']:.2f})."
        )
        if st["rate"] > base and env["others_max"] > 0.5:
            text += (
                " Where other work keeps the CPUs busy, the stream's reading thread beside "
                "the training steps takes a larger share of them than the in-memory fit "
                "does, so a ratio above 1 here says that the loader keeps up, not that "
                "streaming beats memory on an idle machine (not measured here)."
            )
    before = {k: v for k, v in rows.items() if k.startswith("pydataset")}
    if before:
        own = ", ".join(f"{k} {v['rate'] / base:.2f}" for k, v in before.items())
        text += (
            f" The loader before it, a `PyDataset` reading each batch's rows, reached {own} "
            "in the same run: one `pread` per row and the per-batch Python under the GIL, "
            "which more worker threads only take turns at."
        )
    worst = max(v["growth"] for v in rows.values())
    text += (
        f" Memory stays bounded: the in-memory process grew by {mem['growth']:.0f} MB for "
        f"{env['nbytes'] / 1e6:.0f} MB of data (the array plus TensorFlow's copies), the "
        f"file-backed ones by at most {worst:.0f} MB"
    )
    if "stream" in rows:
        text += (
            f" (`RowStream` {rows['stream']['growth']:.0f} MB, its windows "
            f"{env['window_mb']:.0f} MB each, four at most in flight)"
        )
    text += "."
    if env["others_max"] > 0.5:
        text += (
            f" Other processes used up to {env['others_max']:.1f} cores during the timed "
            "epochs, so absolute figures are depressed and noisy; the ratios, measured "
            "alternately under the same load, are the more reliable result."
        )
    return text


# long: command-line options and the measurement steps in order
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs after 1 warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated subset of: {', '.join(CONFIGS)}",
    )
    parser.add_argument("--child-timeout", type=float, default=120.0)
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=20.0,
        help="wait up to S seconds for other processes to quiet down",
    )
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations: {unknown}")
    t_start = time.perf_counter()
    info = machine([("tensorflow", "keras", "numpy")])
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fitq-throughput-") as tmp:
        folder = Path(tmp)
        nbytes = write_data(folder, args.samples, args.features)
        log(f"wrote {nbytes / 1e6:.0f} MB to {folder / 'x.npy'}")
        cost = loader_cost(folder, args.batch)
        log(
            f"NpyRows.rows: {cost['rows_ms']:.2f} ms per shuffled batch "
            f"(bare pread calls {cost['pread_ms']:.2f} ms)"
        )
        quiet = wait_quiet(args.wait_quiet)
        load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
        log(f"load average {load_before}; other processes {quiet:.2f} cores")
        for rnd in range(args.repeats):
            order = configs if rnd % 2 == 0 else configs[::-1]
            for name in order:
                r = run_child(name, folder, args)
                results.append(r)
                if "error" in r:
                    log(f"round {rnd + 1} {name}: FAILED {r['error']}")
                    for ln in r.get("tail", [])[-5:]:
                        log(f"    {ln}")
                else:
                    log(
                        f"round {rnd + 1} {name}: {fmt_rate(r['samples_per_s'])} samples/s, "
                        f"peak RSS +{r['peak_growth_mb']:.0f} MB, others "
                        f"{r['other_cores']:.2f} cores ({r['process_s']:.1f} s)"
                    )
    load_after = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    summary = summarize(results, configs)
    env = {
        "nbytes": nbytes,
        **cost,
        "load_before": load_before,
        "load_after": load_after,
        "quiet": quiet,
        "total_s": time.perf_counter() - t_start,
        "others_max": max((r["other_cores"] for r in results if "error" not in r), default=0.0),
    }
    section = render(info, args, summary, results, env, configs)
    print(section)
    if not args.no_doc:
        write_section(BEGIN_MARK, END_MARK, section)
        log(f"wrote the bench:throughput section of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
