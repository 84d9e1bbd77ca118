"""docker-compose.yml and the Dockerfiles, checked against the code they run.

No image is built: the compose file is parsed, each service's command is parsed as
``fitq`` parses it, each ``FITQ_*`` variable validated by the settings
class, and what each command imports (in a fresh interpreter) is checked against
what its image's Dockerfile installs.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from core.settings import Settings
from fitq.cli import parse
from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
BUILT = {name: svc for name, svc in SERVICES.items() if "build" in svc}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
OWN_PACKAGES = {
    "api",
    "worker",
    "models",
    "core",
    "queueing",
    "checks",
    "storage",
    "dispatcher",
    "migrations",
    "fitq",
    "tests",
}
# Loaded here only because this environment has them; nothing needs them: the venv's
# setuptools hook (a .pth file), pygments, which mako (alembic's templates) uses when
# it finds it, and greenlet, which SQLAlchemy loads when it is installed (here, for
# playwright in the dev extra) and only its asyncio support needs, and psutil (in the dev
# extra, for the benchmarks), which Keras' saving and Celery's billiard use when present;
# and cryptography and cffi (in the dev extra through moto), which redis-py and billiard
# load when they find them.
OPTIONAL = {"setuptools", "pygments", "greenlet", "psutil", "cryptography", "cffi"}
# What each fitq command imports when it runs; the database driver and the broker's
# client follow from the URLs the service is given.
COMMAND_MODULES = {
    "api": ["fitq.cli", "uvicorn", "api.main"],
    "migrate": ["fitq.cli", "migrations.migrate"],
    "dispatcher": ["fitq.cli", "dispatcher.dispatch"],
    "worker": [
        "fitq.cli",
        "fitq.workers",
        "worker.celery_app",
        "worker.tasks",
        "worker.devices",
        "worker.training.runner",
        "sklearn.datasets",
    ],
    "flower": ["fitq.cli", "flower.command"],
}


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` gives the default; ``${VAR:?err}`` a stand-in."""

    def one(match: re.Match[str]) -> str:
        _, op, rest = match.group(1), match.group(2), match.group(3)
        return rest if op == ":-" else "secret"

    return re.sub(r"\$\{(\w+)(:-|:\?|)([^}]*)\}", one, value)


def env_of(svc: dict[str, Any]) -> dict[str, str]:
    return {k: interpolate(str(v)) for k, v in (svc.get("environment") or {}).items()}


def fitq_command(svc: dict[str, Any]) -> list[str]:
    command = svc["command"]
    assert isinstance(command, list) and command[0] == "fitq", command
    return [str(c) for c in command]


def test_every_built_service_runs_a_fitq_command_that_exists() -> None:
    commands = {}
    for name, svc in BUILT.items():
        args = parse(fitq_command(svc)[1:])  # raises on an unknown option
        commands[name] = args.command
    assert sorted(set(commands.values())) == sorted(COMMAND_MODULES)
    # The GPU worker takes every GPU, one worker each; the CPU worker has its own queue.
    gpu = parse(fitq_command(SERVICES["worker-gpu"])[1:])
    cpu = parse(fitq_command(SERVICES["worker-cpu"])[1:])
    assert gpu.gpus == "all" and cpu.gpus is None
    assert not set(gpu.queues.split(",")) & set(cpu.queues.split(","))
    assert gpu.events and cpu.events  # Flower sees their tasks


def test_flower_runs_as_a_celery_subcommand_on_fitqs_broker() -> None:
    code = (
        "from queueing.broker import make_celery\n"
        "from core.settings import Settings\n"
        "make_celery(Settings(broker_url='redis://127.0.0.1:1/0')).start(['flower', '--help'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "monitoring and administrating Celery clusters" in out.stdout


def test_every_fitq_variable_is_a_setting_and_valid() -> None:
    fields = set(Settings.model_fields)
    for name, svc in SERVICES.items():
        env = env_of(svc)
        values = {}
        for key, val in env.items():
            if key.startswith("FITQ_"):
                field = key.removeprefix("FITQ_").lower()
                assert field in fields, f"{name}: {key} is no setting of core/settings.py"
                values[field] = val
        Settings.model_validate(values)  # raises on a value of the wrong kind


def test_secrets_come_from_the_environment() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${POSTGRES_PASSWORD:?" in text and "${FLOWER_BASIC_AUTH:?" in text
    assert env_of(SERVICES["postgres"])["POSTGRES_PASSWORD"] == "secret"
    assert "fitq:secret@postgres" in env_of(SERVICES["api"])["FITQ_DATABASE_URL"]
    for dockerfile in ("Dockerfile", "Dockerfile.worker"):
        for line in (ROOT / dockerfile).read_text().splitlines():
            if line.startswith(("ENV", "ARG")):
                assert not re.search(r"PASSWORD|SECRET|TOKEN|postgresql", line), line


def test_volumes_and_health_checks_are_wired() -> None:
    declared = set(COMPOSE["volumes"])
    used = {
        v.split(":")[0]
        for svc in SERVICES.values()
        for v in svc.get("volumes", [])
        if not v.startswith((".", "/"))
    }
    assert used == declared
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    assert "redisdata:/data" in SERVICES["redis"]["volumes"]
    assert "--appendonly" in SERVICES["redis"]["command"]
    for name, svc in BUILT.items():
        command = parse(fitq_command(svc)[1:]).command
        if command in ("api", "worker"):
            # The API and every worker share the artifact store, where the settings say.
            artifacts = env_of(svc)["FITQ_ARTIFACTS_DIR"]
            assert f"artifacts:{artifacts}" in svc["volumes"], name
    for name, svc in SERVICES.items():
        for target, cond in (svc.get("depends_on") or {}).items():
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[target], f"{name} waits on {target}'s health"
            else:
                assert condition == "service_completed_successfully"
                assert fitq_command(SERVICES[target])[1] == "migrate"
    for name in ("postgres", "redis", "api"):
        assert SERVICES[name]["healthcheck"]["test"], name
    probe = " ".join(SERVICES["api"]["healthcheck"]["test"])
    port = fitq_command(SERVICES["api"])[fitq_command(SERVICES["api"]).index("--port") + 1]
    assert f"127.0.0.1:{port}/readyz" in probe


def test_gpu_worker_reserves_nvidia_gpus() -> None:
    devices = SERVICES["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "deploy" not in SERVICES["worker-cpu"]


def dockerfile_and_extras(svc: dict[str, Any]) -> tuple[str, list[str]]:
    build = svc["build"]
    name = build.get("dockerfile", "Dockerfile")
    text = (ROOT / name).read_text()
    defaults = dict(re.findall(r"^ARG (\w+)=(\S*)$", text, flags=re.M))
    args = {**defaults, **{k: str(v) for k, v in (build.get("args") or {}).items()}}
    (spec,) = re.findall(r'pip install --no-cache-dir "\.(?:\[([^\]]*)\])?"', text)
    for key, val in args.items():
        spec = spec.replace(f"${{{key}}}", val)
    return name, [e for e in spec.split(",") if e]


def test_dockerfiles_install_dependencies_before_the_code() -> None:
    for name in ("Dockerfile", "Dockerfile.worker"):
        lines = [ln for ln in (ROOT / name).read_text().splitlines() if ln.strip()]
        install = next(i for i, ln in enumerate(lines) if '".[' in ln)
        copies = [ln for ln in lines[:install] if ln.startswith("COPY")]
        assert copies == ["COPY pyproject.toml README.md ./"], name
        assert any(ln.startswith("COPY api") for ln in lines[install:]), name
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "fitq-data"} <= set(ignored)


def requirement_closure(extras: list[str]) -> set[str]:
    """Every distribution pip installs for fitq with ``extras`` (as far as this
    environment has them installed to read their requirements)."""
    optional = PYPROJECT["project"]["optional-dependencies"]
    todo = [(Requirement(r), ()) for r in PYPROJECT["project"]["dependencies"]]
    todo += [(Requirement(r), ()) for e in extras for r in optional[e]]
    seen: set[str] = set()
    while todo:
        req, parent_extras = todo.pop()
        env_extras = ("", *parent_extras)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in env_extras):
            continue
        name = canonicalize_name(req.name)
        new_extras = tuple(sorted(req.extras))
        if name in seen and not new_extras:
            continue
        seen.add(name)
        try:
            requires = md.requires(req.name) or []
        except md.PackageNotFoundError:
            continue
        todo += [(Requirement(r), new_extras) for r in requires]
    return seen


def imported_distributions(modules: list[str]) -> dict[str, str]:
    """The distributions whose modules a fresh interpreter loads importing ``modules``."""
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    top = json.loads(out.stdout.strip().splitlines()[-1])
    owners = md.packages_distributions()
    found = {}
    for module in top:
        if module in sys.stdlib_module_names or module in OWN_PACKAGES:
            continue
        for dist in owners.get(module, []):
            found[canonicalize_name(dist)] = module
    return found


@pytest.mark.parametrize("service", sorted(BUILT))
def test_each_image_installs_what_its_command_imports(service: str) -> None:
    svc = BUILT[service]
    dockerfile, extras = dockerfile_and_extras(svc)
    command = parse(fitq_command(svc)[1:]).command
    modules = list(COMMAND_MODULES[command])
    env = env_of(svc)
    if env["FITQ_DATABASE_URL"].startswith("postgresql+psycopg"):
        modules.append("psycopg")
    if env["FITQ_BROKER_URL"].startswith("redis://"):
        modules.append("redis")
    if command != "worker":
        assert "tensorflow" not in requirement_closure(extras), dockerfile
    missing = {
        dist: module
        for dist, module in imported_distributions(modules).items()
        if dist not in requirement_closure(extras) and dist not in OPTIONAL | {"fitq"}
    }
    assert not missing, f"{service} ({dockerfile}, extras {extras}) imports {missing}"


def test_every_fitq_service_keeps_artifacts_in_the_compose_object_store() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    assert "${OBJECTSTORE_PASSWORD:?" in text
    store = SERVICES["objectstore"]
    assert store["healthcheck"]["test"] and env_of(store)["MINIO_ROOT_PASSWORD"] == "secret"
    for name, svc in BUILT.items():
        env = env_of(svc)
        assert Settings(artifacts_url=env["FITQ_ARTIFACTS_URL"]).artifacts_url, name
        match = re.fullmatch(r"http://([a-z-]+):(\d+)", env["AWS_ENDPOINT_URL"])
        assert match and match.group(1) == "objectstore", name
        assert env["AWS_SECRET_ACCESS_KEY"] == "secret" and env["AWS_ACCESS_KEY_ID"], name
    # `fitq migrate` creates the bucket, once the store answers.
    assert SERVICES["migrate"]["depends_on"]["objectstore"] == {"condition": "service_healthy"}
