"""Training throughput of an image folder against the same images in memory as arrays.

From the repository root:

    .venv/bin/python bench/image_throughput.py

A folder of small PNGs (random pixels, one sub-folder per class) is written once to a
temporary directory; the same images, decoded with PIL and scaled to [0, 1], are the
in-memory baseline. One small Keras model (Flatten -> Dense(64, relu) -> Dense(10,
softmax), adam, sparse categorical crossentropy) trains in three configurations:

- ``arrays``: the decoded images as numpy arrays to ``model.fit`` (``shuffle=True``), as
  fitq's runner passes data that is in memory;
- ``folder, decoded once``: ``worker.training.inputs.ImageFolder.fit_inputs`` with the
  folder within the memory budget: the images decoded once, by ``fit_inputs`` (before
  ``fit``), and held; batches in image_dataset_from_directory's order;
- ``folder, each epoch``: the same with a budget the decoded folder does not fit: every
  image read and decoded again each epoch, as image_dataset_from_directory does.

Each measurement is a fresh process, timed as ``bench/throughput.py`` times its runs (the
first epoch, which traces the graph, is not counted, nor is the data load; rounds in
alternating order; peak RSS growth from ``VmHWM``). The results replace the section of
``docs/benchmarks.md`` between the ``bench:image-throughput`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.record import machine, write_section  # noqa: E402 - needs ROOT on the path
from bench.throughput import (  # noqa: E402
    filter_stderr,
    log,
    other_cores,
    peak_rss_kb,
    results_table_head,
    rss_kb,
    system_busy_s,
    tree_cpu_s,
)

BEGIN_MARK = "<!-- bench:image-throughput:begin -->"
END_MARK = "<!-- bench:image-throughput:end -->"
SEED = 1234
CLASSES = 10
CONFIGS = {
    "arrays": "in memory: the decoded images as numpy arrays to `model.fit`",
    "folder once": "image folder, decoded once (the folder fits the memory budget)",
    "folder each epoch": "image folder, decoded each epoch (it does not fit)",
}


def write_images(folder: Path, n: int, size: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(SEED)
    for i in range(n):
        sub = folder / f"c{i % CLASSES}"
        sub.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(sub / f"{i:06d}.png")


def image_arrays(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    paths = sorted(folder.glob("c*/*.png"))
    x = np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255.0 for p in paths])
    y = np.array([int(p.parent.name[1:]) for p in paths])
    return x, y


def fit_inputs(config: str, folder: Path, size: int, batch: int) -> tuple[dict[str, Any], int]:
    """``model.fit``'s data arguments for one configuration, and the number of samples."""
    from models.spec import JobSpec
    from worker.training.inputs import ImageFolder

    if config == "arrays":
        x, y = image_arrays(folder)
        return {"x": x, "y": y, "batch_size": batch, "shuffle": True}, len(x)
    names = [f"c{i}" for i in range(CLASSES)]
    counts = [len(list((folder / c).glob("*.png"))) for c in names]
    budget = 2**62 if config == "folder once" else 1
    images = ImageFolder(folder, size, size, names, counts, budget)
    spec = JobSpec.model_validate(
        {
            "seed": SEED,
            "model": {"builtin": "mlp"},
            "compile": {"optimizer": "adam", "loss": "sparse_categorical_crossentropy"},
            "data": {"train": {"dataset": "images"}},
            "fit": {"batch_size": batch},
        }
    )
    return images.fit_inputs(spec, None), images.n_samples


def pipeline_cost(folder: Path, size: int, batch: int, rounds: int = 3) -> dict[str, float]:
    """Seconds to draw one epoch's batches, no training: Keras' own pipeline for the
    arrays (``ArrayDataAdapter``, as ``fit`` builds it) against the folder decoded once
    and the folder decoded each epoch; medians of alternating rounds."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

    arrays, _ = fit_inputs("arrays", folder, size, batch)
    pipelines = {
        "arrays": ArrayDataAdapter(
            arrays["x"], arrays["y"], batch_size=batch, shuffle=True
        ).get_tf_dataset(),
        "folder once": fit_inputs("folder once", folder, size, batch)[0]["x"],
        "folder each epoch": fit_inputs("folder each epoch", folder, size, batch)[0]["x"],
    }
    times: dict[str, list[float]] = {name: [] for name in pipelines}
    for rnd in range(rounds):
        for name in list(pipelines)[:: 1 if rnd % 2 == 0 else -1]:
            t0 = time.perf_counter()
            for _ in pipelines[name]:
                pass
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def child(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential(
        [
            keras.Input((args.size, args.size, 3)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    base = rss_kb()
    Path("/proc/self/clear_refs").write_text("5")
    inputs, n = fit_inputs(args.child, Path(args.data), args.size, args.batch)
    marks: list[tuple[float, float, float]] = []

    def mark(*_: Any) -> None:
        marks.append((time.perf_counter(), system_busy_s(), tree_cpu_s()))

    timer = keras.callbacks.LambdaCallback(on_train_begin=mark, on_epoch_end=mark)
    model.fit(**inputs, epochs=1 + args.epochs, verbose=0, callbacks=[timer])
    (w0, b0, c0), (w1, b1, c1) = marks[1], marks[-1]
    result = {
        "config": args.child,
        "samples_per_s": n * args.epochs / (w1 - w0),
        "first_epoch_s": marks[1][0] - marks[0][0],
        "epoch_s": [b[0] - a[0] for a, b in zip(marks[1:], marks[2:], strict=False)],
        "own_cores": (c1 - c0) / (w1 - w0),
        "other_cores": max(0.0, (b1 - b0) - (c1 - c0)) / (w1 - w0),
        "peak_growth_mb": (peak_rss_kb() - base) / 1024,
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def run_child(config: str, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", config, "--data"]
    cmd += [str(folder), "--epochs", str(args.epochs), "--batch", str(args.batch)]
    cmd += ["--size", str(args.size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not found:
        return {
            "config": config,
            "error": f"exit {proc.returncode}",
            "stderr": [proc.stderr[-2000:]],
        }
    result: dict[str, Any] = json.loads(found[-1][len("RESULT ") :])
    result["stderr"] = filter_stderr(proc.stderr)
    return result


def render(
    info: dict[str, str],
    args: argparse.Namespace,
    results: list[dict[str, Any]],
    cost: dict[str, float],
) -> str:
    ok = {c: [r for r in results if r["config"] == c and "error" not in r] for c in CONFIGS}
    rate = {c: statistics.median(r["samples_per_s"] for r in rs) for c, rs in ok.items() if rs}
    base = rate.get("arrays")
    lines = [
        BEGIN_MARK,
        "",
        "## Training throughput: an image folder vs the same images in memory",
        "",
        "Written by `bench/image_throughput.py`; rerunning it replaces this section only.",
        "",
        f"**What is measured.** {args.images:,} PNGs of {args.size}x{args.size} random RGB "
        f"pixels in {CLASSES} class folders; an MLP (Flatten -> Dense(64, relu) -> Dense(10, "
        f"softmax), adam, batch {args.batch}), one fresh process per run, 1 + {args.epochs} "
        f"epochs, the first (which traces the graph) not counted, nor the data load "
        "(reading the arrays; decoding the folder once); "
        f"{args.repeats} rounds in alternating order, medians. The baseline is the same "
        "images decoded with PIL, as arrays to `model.fit`; the folders go through "
        "`ImageFolder.fit_inputs` as fitq's runner calls it. Peak RSS growth from `VmHWM`, "
        "from just after `compile` (covering the data load).",
        "",
        *results_table_head(info),
    ]
    for c, desc in CONFIGS.items():
        if c not in rate:
            lines.append(f"| {desc} | failed | | | | |")
            continue
        runs = ", ".join(f"{r['samples_per_s']:,.0f}" for r in ok[c])
        growth = statistics.median(r["peak_growth_mb"] for r in ok[c])
        other = statistics.median(r["other_cores"] for r in ok[c])
        ratio = f"{rate[c] / base:.2f}" if base else "n/a"
        lines.append(
            f"| {desc} | {rate[c]:,.0f} | {ratio} | {growth:.0f} MB | {runs} | {other:.2f} |"
        )
    alone = ", ".join(f"{name} {s:.3f} s" for name, s in cost.items())
    lines += [
        "",
        "The pipelines alone, without training (in the parent process, before the runs: "
        "the seconds to draw one epoch's batches, median of 3 alternating rounds; for the "
        f"arrays, Keras' own `ArrayDataAdapter` pipeline as `fit` builds it): {alone}.",
    ]
    warnings = sorted({f"{r['config']}: {ln[:200]}" for r in results for ln in r["stderr"]})
    if warnings:
        lines += ["", "Lines on the processes' stderr (start-up chatter left out):", "", "```"]
        lines += [*warnings, "```"]
    lines += ["", END_MARK]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs after 1 warm-up")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-doc", action="store_true", help="print only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    info = machine([("tensorflow", "keras", "numpy")])
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="fitq-images-") as tmp:
        folder = Path(tmp) / "images"
        write_images(folder, args.images, args.size)
        info["other processes before (cores)"] = f"{other_cores(2.0):.2f}"
        cost = pipeline_cost(folder, args.size, args.batch)
        log(f"pipelines alone, seconds an epoch: {cost}")
        for rnd in range(args.repeats):
            for config in list(CONFIGS)[:: 1 if rnd % 2 == 0 else -1]:
                results.append(run_child(config, folder, args))
                log(f"round {rnd + 1} {config}: {json.dumps(results[-1])[:300]}")
    info["load average after"] = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    section = render(info, args, results, cost)
    print(section)
    if not args.no_doc:
        write_section(BEGIN_MARK, END_MARK, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
