"""The client commands of ``fitq``: submit, jobs, datasets, models; made for CI pipelines.

Exit codes:
    0  the job succeeded and every --require and --forbid gate passed
    1  the job failed or was cancelled
    2  the spec was refused (the API's messages are printed, with field paths)
    3  a gate failed
    4  timed out waiting (the job goes on unless --cancel-on-timeout)
    5  the service could not be reached
"""

from __future__ import annotations

import functools
import json
import operator
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec

import click
import yaml

# The base install is enough: nothing here imports TensorFlow, Keras, the worker, or
# the service's own packages.
from fitq.client import ApiError, Client, TimedOut, Unreachable, format_detail
from fitq.groups import Declared, verbatim

OK, JOB_FAILED, REFUSED, GATE_FAILED, TIMED_OUT, UNREACHABLE = 0, 1, 2, 3, 4, 5
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
}
GATE = re.compile(
    r"^\s*(?:(final|best|test)\.)?([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|==|>|<)\s*"
    r"([-+0-9.eE]+)\s*$"
)


@dataclass
class Gate:
    """A requirement on a finished job: ``[final.|best.|test.]metric OP number``."""

    text: str
    scope: str
    metric: str
    op: str
    value: float

    @classmethod
    def parse(cls, text: str) -> Gate:
        match = GATE.match(text)
        if match is None:
            raise ValueError(
                f"cannot read the gate {text!r}; expected e.g. 'val_accuracy>=0.9', "
                "'test.accuracy>0.8' or 'best.val_loss<=0.3'"
            )
        scope, metric, op, value = match.groups()
        return cls(text, scope or "final", metric, op, float(value))

    def check(self, job: dict[str, Any], best_row: dict[str, Any] | None) -> tuple[bool, str]:
        source = {
            "final": job.get("latest_metrics"),
            "test": job.get("test_metrics"),
            "best": (best_row or {}).get("metrics"),
        }[self.scope] or {}
        got = source.get(self.metric)
        if got is None:
            return False, f"{self.scope} metrics have no {self.metric!r} ({sorted(source)})"
        passed = OPS[self.op](float(got), self.value)
        return passed, f"{self.scope}.{self.metric} = {got:.6g} {self.op} {self.value:g}"


FINDINGS = ("overfitting", "underfitting", "divergence")


@dataclass
class Forbid:
    """A requirement that the job's insight has no finding of a kind (``overfitting``)."""

    kind: str

    @property
    def text(self) -> str:
        return f"no {self.kind}"

    # The same call as Gate.check, for a list of both; findings need no best row.
    def check(self, job: dict[str, Any], _best_row: dict[str, Any] | None) -> tuple[bool, str]:
        found = [
            f for f in (job.get("insight") or {}).get("findings", []) if f["kind"] == self.kind
        ]
        if not found:
            return True, f"no {self.kind} found"
        f = found[0]
        return False, f"{self.kind} from epoch {f['epoch']}: {f['message']} ({f['remedy']})"


def insight_lines(job: dict[str, Any]) -> list[str]:
    """The job's insight, a line per finding, for people reading a CI log."""
    insight = job.get("insight") or {}
    lines = []
    if insight.get("best_epoch"):
        lines.append(
            f"best epoch: {insight['best_epoch']} "
            f"({insight['monitor']} {insight['best_value']:.6g})"
        )
    if insight.get("final_weights_epoch"):
        lines.append(
            f"final weights: epoch {insight['final_weights_epoch']} (restore_best_weights)"
        )
    for f in insight.get("findings", []):
        lines.append(
            f"{f['kind']} from epoch {f['epoch']}: {f['message']}. What helps: {f['remedy']}"
        )
    return lines


def set_path(spec: dict[str, Any], assignment: str) -> None:
    """``fit.epochs=5``: the value is read as YAML (numbers, lists, booleans)."""
    path, sep, raw = assignment.partition("=")
    if not sep or not path:
        raise ValueError(f"cannot read --set {assignment!r}; expected path.to.field=value")
    node = spec
    *parents, last = path.split(".")
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[last] = yaml.safe_load(raw)


def _progress(row: dict[str, Any], epochs: int, tty: bool) -> str:
    metrics = " - ".join(
        f"{k}: {v:.4f}" for k, v in sorted(row["metrics"].items()) if isinstance(v, (int, float))
    )
    line = f"Epoch {row['epoch']}/{epochs} - {row['duration_s']:.1f}s - {metrics}"
    if tty:
        done = int(30 * row["epoch"] / max(epochs, 1))
        return f"[{'=' * done}{'.' * (30 - done)}] {line}"
    return line


def write_junit(
    path: Path, job: dict[str, Any], results: list[tuple[Gate | Forbid, bool, str]]
) -> None:
    suite = ET.Element(
        "testsuite",
        name=f"fitq job {job.get('name') or job['id']}",
        tests=str(len(results)),
        failures=str(sum(1 for _, ok, _ in results if not ok)),
    )
    props = ET.SubElement(suite, "properties")
    for key in ("id", "status", "stop_reason"):
        ET.SubElement(props, "property", name=key, value=str(job.get(key)))
    for scope in ("latest_metrics", "test_metrics"):
        for metric, value in (job.get(scope) or {}).items():
            ET.SubElement(props, "property", name=f"{scope}.{metric}", value=str(value))
    for gate, passed, message in results:
        case = ET.SubElement(suite, "testcase", classname="fitq.gates", name=gate.text)
        if not passed:
            ET.SubElement(case, "failure", message=message).text = message
        ET.SubElement(case, "system-out").text = message
    path.write_text(ET.tostring(suite, encoding="unicode", xml_declaration=True))


def _load_spec(path: str) -> dict[str, Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    spec = yaml.safe_load(text)
    if not isinstance(spec, dict):
        raise ValueError(f"{path} does not hold a job spec (a mapping)")
    return spec


json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


SUBMIT = "submit a job spec (YAML or JSON); CI-friendly"


@click.command(
    "submit",
    help=verbatim(f"{SUBMIT}. SPEC is the spec file, or - for standard input.\n\n{__doc__}"),
    short_help=SUBMIT,
)
@click.argument("spec")
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="PATH=VALUE",
    help="override a field, e.g. --set fit.epochs=5 (repeatable)",
)
@click.option("--name", metavar="NAME")
@click.option("--queue", metavar="QUEUE")
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="a re-run with the same key finds the same job (default: a new key per run, "
    "kept across its retries)",
)
@click.option("--wait", is_flag=True, help="wait for the job to end")
@click.option("--follow", is_flag=True, help="show each epoch as it ends")
@click.option("--timeout", type=float, metavar="TIMEOUT", help="seconds to wait (exit 4 past it)")
@click.option("--cancel-on-timeout", is_flag=True)
@click.option(
    "--require",
    multiple=True,
    metavar="GATE",
    help="e.g. 'val_accuracy>=0.9', 'test.accuracy>0.8' (repeatable)",
)
@click.option(
    "--forbid",
    multiple=True,
    type=click.Choice(FINDINGS),
    help="fail (exit 3) if the job's insight finds this, e.g. --forbid overfitting",
)
@click.option("--junit", metavar="FILE", help="write the gates as JUnit XML")
@click.option("--download-best", metavar="DIR", help="download the best checkpoint")
@click.option(
    "--download-model",
    metavar="PATH",
    help="download the trained model (model.keras) to PATH, a file or a folder, once the "
    "job has succeeded; waits for the job as --wait does",
)
@click.option("--dry-run", is_flag=True, help="validate only; show warnings")
@json_option
def submit(
    spec: str,
    assignments: tuple[str, ...],
    name: str | None,
    queue: str | None,
    idempotency_key: str | None,
    wait: bool,
    follow: bool,
    timeout: float | None,
    cancel_on_timeout: bool,
    require: tuple[str, ...],
    forbid: tuple[str, ...],
    junit: str | None,
    download_best: str | None,
    download_model: str | None,
    dry_run: bool,
    as_json: bool,
) -> int:
    gates, job_spec = _submitted_spec(spec, assignments, name, queue, require, forbid)
    client = Client()

    def action() -> int:
        if dry_run:
            warnings = client.validate(job_spec)
            _emit(
                as_json,
                {"valid": True, "warnings": warnings},
                "spec is valid" + "".join(f"\nwarning: {w}" for w in warnings),
            )
            return OK
        job = client.submit(job_spec, idempotency_key=idempotency_key)
        for warning in job.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        downloads = Downloads(download_best, download_model)
        if not (wait or follow or gates or downloads.wanted or junit):
            _emit(as_json, job, f"submitted job {job['id']} ({job['status']})")
            return OK
        print(f"fitq: job {job['id']} on queue {job['queue']!r}", file=sys.stderr)
        if not _waited(client, job, follow and not as_json, timeout, cancel_on_timeout):
            return TIMED_OUT
        return _judged(client, job["id"], gates, junit, downloads, as_json)

    return exit_code(action)


def _submitted_spec(
    spec: str,
    assignments: tuple[str, ...],
    name: str | None,
    queue: str | None,
    require: tuple[str, ...],
    forbid: tuple[str, ...],
) -> tuple[list[Gate | Forbid], dict[str, Any]]:
    """The gates and the spec to submit, with the command line's changes to the file."""
    try:
        gates: list[Gate | Forbid] = [Gate.parse(g) for g in require]
        gates += [Forbid(kind) for kind in forbid]
        job_spec = _load_spec(spec)
        for assignment in assignments:
            set_path(job_spec, assignment)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise click.UsageError(str(exc)) from exc
    if name:
        job_spec["name"] = name
    if queue:
        job_spec["queue"] = queue
    return gates, job_spec


def _waited(
    client: Client,
    job: dict[str, Any],
    show_epochs: bool,
    timeout: float | None,
    cancel_on_timeout: bool,
) -> bool:
    """Whether the job ended within ``timeout``; each epoch is shown if ``show_epochs``."""
    out = sys.stdout
    epochs = int(job["spec"]["fit"]["epochs"])
    try:
        for row in client.follow(job["id"], timeout=timeout):
            if show_epochs:
                print(_progress(row, epochs, out.isatty()), file=out, flush=True)
    except TimedOut as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        if cancel_on_timeout:
            client.cancel(job["id"])
            print(f"fitq: cancelled job {job['id']}", file=sys.stderr)
        return False
    return True


@dataclass(frozen=True)
class Downloads:
    """What ``fitq submit`` downloads once the job has ended: the best checkpoint into a
    folder, the trained model to a file or folder."""

    best: str | None
    model: str | None

    @property
    def wanted(self) -> bool:
        return bool(self.best or self.model)

    def fetch(self, client: Client, job: dict[str, Any]) -> None:
        if self.best:
            for c in [c for c in client.checkpoints(job["id"]) if c["is_best"]]:
                path = client.download_checkpoint(job["id"], c, Path(self.best))
                print(f"fitq: best checkpoint saved to {path}", file=sys.stderr)
        if self.model and job.get("final_model"):
            path = client.download_model(job["id"], Path(self.model))
            print(f"fitq: trained model saved to {path}", file=sys.stderr)
        elif self.model:
            print(f"fitq: job {job['id']} {job['status']}: no trained model", file=sys.stderr)


def _judged(
    client: Client,
    job_id: str,
    gates: list[Gate | Forbid],
    junit: str | None,
    downloads: Downloads,
    as_json: bool,
) -> int:
    """The ended job's exit code, its gates checked, written and shown."""
    job = client.job(job_id)
    best_row = None
    if job.get("best"):
        rows = client.metrics(job["id"], after_epoch=int(job["best"]["epoch"]) - 1)
        best_row = rows[0] if rows else None
    results = [(g, *g.check(job, best_row)) for g in gates]
    if junit:
        write_junit(Path(junit), job, results)
    downloads.fetch(client, job)
    summary = {
        **job,
        "gates": [{"gate": g.text, "passed": ok, "detail": m} for g, ok, m in results],
    }
    lines = [f"job {job['id']}: {job['status']} ({job['stop_reason']})"]
    if job.get("error"):
        lines.append(f"error: {job['error']['type']}: {job['error']['message']}")
    lines += insight_lines(job)
    lines += [f"gate {'PASS' if ok else 'FAIL'}: {m}" for _, ok, m in results]
    _emit(as_json, summary, "\n".join(lines))
    if job["status"] != "succeeded":
        return JOB_FAILED
    return GATE_FAILED if any(not ok for _, ok, _ in results) else OK


def _emit(as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


P = ParamSpec("P")


def _answered(command: Callable[Concatenate[Client, P], None]) -> Callable[P, int]:
    """A command whose refusals exit 2 and whose unreachable service exits 5."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        def action() -> int:
            command(Client(), *args, **kwargs)
            return OK

        return exit_code(action)

    return run


def exit_code(action: Callable[[], int]) -> int:
    """Runs a client command; a refusal exits 2 (with the service's reasons), a timeout
    4, an unreachable service 5, each said on stderr."""
    try:
        return action()
    except ApiError as exc:
        print(
            f"fitq: the service refused the request ({exc.status}):\n{format_detail(exc.detail)}",
            file=sys.stderr,
        )
        return REFUSED
    except TimedOut as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        return TIMED_OUT
    except Unreachable as exc:
        print(f"fitq: {exc}", file=sys.stderr)
        return UNREACHABLE


@click.group(
    "jobs",
    cls=Declared,
    short_help="list, show, cancel jobs; logs, metrics, checkpoints, model; evaluate, predict",
)
def jobs() -> None:
    """list, show, cancel jobs; logs, metrics, checkpoints, model; evaluate, predict"""


@jobs.command("ls")
@click.option("--status", metavar="STATUS")
@click.option("--queue", metavar="QUEUE")
@click.option("--parent", metavar="ID", help="only the evaluate and predict runs of job ID")
@click.option("--limit", type=int, default=50, metavar="LIMIT")
@json_option
@_answered
def jobs_ls(
    client: Client,
    status: str | None,
    queue: str | None,
    parent: str | None,
    limit: int,
    as_json: bool,
) -> None:
    items = client.jobs(status=status, queue=queue, parent=parent, limit=limit)
    _emit(
        as_json,
        items,
        "\n".join(
            f"{j['id']}  {j['status']:<9}  {j['queue']:<10}  {_done_part(j)}  "
            f"{j['name'] or ''}{_lineage(j)}"
            for j in items
        ),
    )


def _lineage(job: dict[str, Any]) -> str:
    """Where a fit job's model came from, when it is another job's (a warm start)."""
    parent = job.get("parent_job_id")
    warm = parent and job.get("kind", "fit") == "fit"
    return f"  (warm start from {parent})" if warm else ""


def _done_part(job: dict[str, Any]) -> str:
    """How far a job is: its epoch; for a run (evaluate, predict), whose model it uses."""
    if job.get("kind", "fit") != "fit":
        return f"{job['kind']} of {job['parent_job_id']}"
    return f"epoch {job['progress']['epoch'] or 0}/{job['progress']['epochs']}"


job_id_argument = click.argument("job_id", metavar="ID")


@jobs.command("show")
@job_id_argument
@json_option
@_answered
def jobs_show(client: Client, job_id: str, as_json: bool) -> None:
    job = client.job(job_id)
    _emit(
        as_json,
        job,
        yaml.safe_dump({k: v for k, v in job.items() if k != "spec"}, sort_keys=False),
    )


@jobs.command("cancel")
@job_id_argument
@json_option
@_answered
def jobs_cancel(client: Client, job_id: str, as_json: bool) -> None:
    job = client.cancel(job_id)
    _emit(as_json, job, f"job {job['id']}: {job['status']}")


@jobs.command("logs")
@job_id_argument
# --json is accepted as by every jobs command; the log is plain text either way.
@click.option("--json", "_as_json", is_flag=True, help="accepted; the log is plain text")
@_answered
def jobs_logs(client: Client, job_id: str, _as_json: bool) -> None:
    print(client.logs(job_id), end="")


@jobs.command("metrics")
@job_id_argument
@json_option
@_answered
def jobs_metrics(client: Client, job_id: str, as_json: bool) -> None:
    rows = client.metrics(job_id)
    _emit(as_json, rows, "\n".join(_progress(r, len(rows), False) for r in rows))


@jobs.command("checkpoints")
@job_id_argument
@json_option
@_answered
def jobs_checkpoints(client: Client, job_id: str, as_json: bool) -> None:
    items = client.checkpoints(job_id)
    _emit(
        as_json,
        items,
        "\n".join(
            f"{c['id']:>4}  epoch {c['epoch']:>4}  {'best ' if c['is_best'] else '     '}"
            f"{c['path']}  {c['size_bytes']} bytes"
            for c in items
        ),
    )


@jobs.command("model", help="download a succeeded job's trained model")
@job_id_argument
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="a file, or a folder for model-ID.keras / savedmodel-ID.tar.gz (default: here)",
)
@click.option(
    "--format",
    "model_format",
    type=click.Choice(["keras", "savedmodel"]),
    default="keras",
    show_default=True,
    help="model.keras, or the SavedModel (output.export) as a .tar.gz",
)
@json_option
@_answered
def jobs_model(
    client: Client, job_id: str, output: str | None, model_format: str, as_json: bool
) -> None:
    path = client.download_model(job_id, Path(output) if output else None, model_format)
    size = path.stat().st_size
    _emit(
        as_json,
        {"id": job_id, "format": model_format, "path": str(path), "size_bytes": size},
        f"saved {path} ({size} bytes)",
    )


@click.group("datasets", cls=Declared, short_help="upload and list datasets")
def datasets() -> None:
    """upload and list datasets"""


@datasets.command("upload", help="upload FILE: a .npz (x, y, ...) or a .zip of class folders")
@click.argument("file")
@click.option("--name", metavar="NAME")
@json_option
@_answered
def datasets_upload(client: Client, file: str, name: str | None, as_json: bool) -> None:
    ds = client.upload_dataset(Path(file), name)
    _emit(
        as_json,
        ds,
        f"uploaded dataset {ds['id']} ({ds['kind']}, "
        f"{ds['splits']['train']['n_samples']} training samples)",
    )


@datasets.command("ls")
@json_option
@_answered
def datasets_ls(client: Client, as_json: bool) -> None:
    items = client.datasets()
    _emit(
        as_json,
        items,
        "\n".join(
            f"{d['id']}  {d['kind']:<6}  {d['splits']['train']['n_samples']:>8} samples  "
            f"{d['name'] or ''}"
            for d in items
        ),
    )


# Runs of a finished job's model (fitq.runs), imported when one of them runs.
jobs.add_lazy("evaluate", "fitq.runs:evaluate")
jobs.add_lazy("predict", "fitq.runs:predict")


@click.group("models", cls=Declared, short_help="upload and list Keras models")
def models() -> None:
    """upload and list Keras models"""


@models.command("upload", help="upload FILE: a .keras file as model.save() writes it")
@click.argument("file")
@click.option("--name", metavar="NAME")
@json_option
@_answered
def models_upload(client: Client, file: str, name: str | None, as_json: bool) -> None:
    model = client.upload_model(Path(file), name)
    info = model["info"]
    _emit(
        as_json,
        model,
        f"uploaded model {model['id']} ({info['class_name']}, {info['params']} weights, "
        f"input {info['input_shape']})",
    )


@models.command("ls")
@json_option
@_answered
def models_ls(client: Client, as_json: bool) -> None:
    items = client.models()
    _emit(
        as_json,
        items,
        "\n".join(
            f"{m['id']}  {m['info']['class_name']:<10}  {m['info']['params']:>10} weights  "
            f"{m['name'] or ''}"
            for m in items
        ),
    )
