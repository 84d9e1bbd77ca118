"""A corpus of hostile inputs: each refused with a 4xx, nothing written outside the data
folder, nothing read from outside it (canary files prove both), the service still up."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.tokens import create_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from storage.uploads import npz_bytes
from tests.factories import digits_spec, keras_zip


def layer(
    cls: str, module: str | None = "keras.layers", registered: str | None = None, **config: Any
) -> dict[str, Any]:
    return {"module": module, "class_name": cls, "config": config, "registered_name": registered}


def keras_model(*layers: dict[str, Any], **top: Any) -> dict[str, Any]:
    first = layer("InputLayer", batch_shape=[None, 8, 8, 1], name="in")
    config = {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {
            "name": "m",
            "layers": [
                first,
                layer("Flatten", name="f"),
                *layers,
                layer("Dense", units=10, name="out"),
            ],
        },
        **top,
    }
    return {"model.builtin": ..., "model.params": ..., "model.keras_config": config}


def ckpt(path: str) -> dict[str, Any]:
    return {"callbacks": [{"type": "ModelCheckpoint", "filepath": path, "monitor": "loss"}]}


def zip_with(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(name, b"x")
        z.writestr("y.npy", b"x")
    return buf.getvalue()


def keras_file(config: dict[str, Any], links: tuple[str, ...] = (), **extra: bytes) -> bytes:
    """A ``.keras`` archive around ``config`` (a ``keras_model(...)`` override's)."""
    members = {
        "config.json": json.dumps(config["model.keras_config"]).encode(),
        "metadata.json": b'{"keras_version": "3.15.1"}',
        "model.weights.h5": b"\x89HDF\r\n\x1a\n",
        **extra,
    }
    return keras_zip(members, links=links)


def hostile_models() -> dict[str, bytes]:
    lambda_config = keras_model(layer("Lambda", name="l", function={"class_name": "__lambda__"}))
    plain = keras_model()
    return {
        ".keras with a Lambda": keras_file(lambda_config),
        ".keras member ../../CANARY": keras_file(plain, **{"../../CANARY": b"owned"}),
        ".keras symlink to CANARY": keras_file(
            plain, ("model.weights.h5",), **{"model.weights.h5": b"../../CANARY"}
        ),
        ".keras zip bomb": keras_file(plain, **{"model.weights.h5": b"\0" * 5_000_000}),
    }


# Each: (what it tries, how it is sent, what it carries).
SPECS: dict[str, dict[str, Any]] = {
    "lambda with marshalled bytecode": keras_model(
        layer(
            "Lambda",
            name="l",
            function={
                "class_name": "__lambda__",
                "config": {
                    "code": "4wEAAAAAAAAAAAAAAAEAAAADAAAAQwAAAHMIAAAAdABkAYMBUwApAk4=",
                    "defaults": None,
                    "closure": None,
                },
            },
        )
    ),
    "lambda naming a keras function": keras_model(
        layer(
            "Lambda",
            name="l",
            function={
                "module": "keras.ops",
                "class_name": "function",
                "config": "exp",
                "registered_name": "exp",
            },
        )
    ),
    "enable_unsafe_deserialization in the config": keras_model(
        enable_unsafe_deserialization=True, safe_mode=False
    ),
    "TFSMLayer loading a saved model": keras_model(
        layer("TFSMLayer", filepath="/tmp/saved_model", call_endpoint="serve", name="t")
    ),
    "TorchModuleWrapper": keras_model(layer("TorchModuleWrapper", module="keras.layers", name="t")),
    "StringLookup with a vocabulary file": keras_model(
        layer("StringLookup", vocabulary="CANARY", name="s")
    ),
    "module injection": keras_model(layer("system", module="os", name="x")),
    "registered_name injection": keras_model(
        layer("Dense", registered="builtins>eval", units=4, name="d")
    ),
    "activation naming a function": keras_model(
        layer("Dense", units=4, activation="os.system", name="d")
    ),
    "initializer from another module": keras_model(
        layer(
            "Dense",
            units=4,
            name="d",
            kernel_initializer={"module": "builtins", "class_name": "eval", "config": {}},
        )
    ),
    "activation object from builtins": keras_model(
        layer(
            "Activation",
            name="a",
            activation={
                "module": "builtins",
                "class_name": "exec",
                "config": {},
                "registered_name": None,
            },
        )
    ),
    "parameter bomb (keras_config)": keras_model(
        layer("Dense", units=8192, name="a"), layer("Dense", units=8192, name="b")
    ),
    "parameter bomb (builtin)": {"model.params": {"hidden_units": [8192] * 8}},
    "checkpoint path with ..": ckpt("../../CANARY.keras"),
    "absolute checkpoint path": ckpt("/tmp/evil.keras"),
    "attribute access in the template": ckpt("{epoch.__class__.__mro__}.keras"),
    "index access in the template": ckpt("{epoch[0]}.keras"),
    "conversion in the template": ckpt("{epoch!r}.keras"),
    "huge field width": ckpt("{epoch:099999d}.keras"),
    "hf:// scheme": ckpt("hf://evil/model.keras"),
    "s3:// scheme": ckpt("s3://bucket/model.keras"),
    "drive letter": ckpt("c:evil.keras"),
    "NUL byte": ckpt("evil\x00.keras"),
    "CSVLogger outside the folder": {
        "callbacks": [{"type": "CSVLogger", "filename": "../CANARY.csv"}]
    },
    "TensorBoard log_dir": {"callbacks": [{"type": "TensorBoard", "log_dir": "/tmp"}]},
    "dataset id with ..": {"data.train": {"dataset": "../../CANARY"}, "data.validation": ...},
    "builtin dataset with ..": {"data.train": {"dataset": "builtin:../../etc/passwd"}},
    "queue name injection": {"queue": "default; rm -rf /"},
    "augmentation Lambda": {"data.augmentation": [{"layer": "Lambda", "function": "exec"}]},
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data / 'fitq.db'}",
        auth="on",
        max_body_bytes=256 * 1024,
    )
    upgrade(settings.resolved_database_url)
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        tokens = {n: create_token(s, n) for n in ("mallory", "victim")}
    canary = tmp_path / "CANARY"
    canary.write_text("secret")
    now = time.time()
    os.utime(canary, (now - 2 * 86400, now - 3 * 86400))  # a read would move the atime
    with TestClient(create_app(settings)) as client:
        yield {
            "client": client,
            "tokens": tokens,
            "tmp": tmp_path,
            "data": data,
            "canary": canary,
            "atime": canary.stat().st_atime,
        }


def outside(tmp: Path, data: Path) -> set[str]:
    return {str(p) for p in tmp.rglob("*") if data not in p.parents and p != data}


def test_every_hostile_input_is_refused(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    mallory = {"Authorization": f"Bearer {world['tokens']['mallory']}"}
    victim = {"Authorization": f"Bearer {world['tokens']['victim']}"}
    before = outside(world["tmp"], world["data"])
    victims_job = client.post("/v1/jobs", json=digits_spec(), headers=victim).json()["id"]

    answers: dict[str, int] = {}
    for what, overrides in SPECS.items():
        spec = digits_spec(**overrides)
        spec["data"]["train"]["dataset"] = spec["data"]["train"].get("dataset") or None
        answers[what] = client.post("/v1/jobs", json=spec, headers=mallory).status_code
    answers["YAML python tag"] = client.post(
        "/v1/jobs",
        content=b"!!python/object/apply:os.system ['touch CANARY2']",
        headers={**mallory, "Content-Type": "application/yaml"},
    ).status_code
    answers["oversize body"] = client.post(
        "/v1/jobs",
        content=b"{" + b" " * 300_000 + b"}",
        headers={**mallory, "Content-Type": "application/json"},
    ).status_code
    answers["forged token"] = client.post(
        "/v1/jobs", json=digits_spec(), headers={"Authorization": "Bearer fitq_forged"}
    ).status_code
    answers["another owner's job"] = client.get(
        f"/v1/jobs/{victims_job}", headers=mallory
    ).status_code
    answers["another owner's cancel"] = client.post(
        f"/v1/jobs/{victims_job}/cancel", headers=mallory
    ).status_code
    for name in ("../../CANARY.npy", "/tmp/x.npy"):
        answers[f"npz member {name}"] = client.post(
            "/v1/datasets", headers=mallory, files={"file": ("d.npz", zip_with(name))}
        ).status_code
    for what, file in hostile_models().items():
        answers[what] = client.post(
            "/v1/models", headers=mallory, files={"file": ("m.keras", file)}
        ).status_code
    answers["pickle in npz"] = client.post(
        "/v1/datasets",
        headers=mallory,
        files={"file": ("d.npz", npz_bytes(x=np.array([None, {}], dtype=object), y=np.zeros(2)))},
    ).status_code

    print(
        f"\n{len(answers)} hostile inputs: "
        + ", ".join(f"{k}={v}" for k, v in sorted(answers.items()))
    )
    assert len(answers) >= 41
    assert {k: v for k, v in answers.items() if not 400 <= v < 500} == {}
    assert outside(world["tmp"], world["data"]) == before  # nothing written outside
    stat = world["canary"].stat()  # unchanged, without reading it (that would move atime)
    assert stat.st_size == len("secret") and stat.st_mtime < time.time() - 86400
    assert client.get("/healthz").status_code == 200
    jobs = client.get("/v1/jobs", headers=mallory).json()["items"]
    assert jobs == []  # nothing hostile was queued
    assert client.get("/v1/models", headers=mallory).json()["items"] == []
    assert client.get(f"/v1/jobs/{victims_job}", headers=victim).json()["status"] == "queued"


def test_canary_atime_shows_no_read(world: dict[str, Any]) -> None:
    canary: Path = world["canary"]
    control = world["tmp"] / "CONTROL"
    control.write_text("x")
    now = time.time()
    os.utime(control, (now - 2 * 86400, now - 3 * 86400))
    control.read_text()
    if control.stat().st_atime == now - 2 * 86400:
        pytest.skip("this filesystem does not record reads (noatime): the canary can't tell")
    test_every_hostile_input_is_refused(world)
    assert canary.stat().st_atime == world["atime"], "something read the canary file"
