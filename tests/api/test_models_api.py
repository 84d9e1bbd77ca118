"""Uploaded ``.keras`` models: what ``model.save()`` writes is taken, compiled or not;
hostile archives are refused with a 4xx and leave nothing on disk, inside the data
folder or outside it; jobs name an upload, or a parent job, only when it is theirs
and fits their data."""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.tokens import create_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from storage.models import models_dir
from tests.factories import digits_spec, keras_members, keras_zip

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")


def saved(model: Any, tmp: Path, name: str) -> bytes:
    path = tmp / f"{name}.keras"
    model.save(path)
    return path.read_bytes()


def mlp(units: int = 16) -> Any:
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(units, activation="relu", name="hidden"),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )


def residual() -> Any:
    inputs = keras.Input((8, 8, 1), name="pixels")
    flat = keras.layers.Flatten(name="flat")(inputs)
    hidden = keras.layers.Dense(64, activation="relu", name="hidden")(flat)
    added = keras.layers.Add(name="skip")([flat, hidden])
    return keras.Model(inputs, keras.layers.Dense(10, name="out")(added))


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real files from ``model.save()``: untrained, compiled and trained, Functional, big."""
    tmp = tmp_path_factory.mktemp("keras")
    keras.utils.set_random_seed(1)
    files = {"plain": saved(mlp(), tmp, "plain"), "functional": saved(residual(), tmp, "res")}
    trained = mlp()
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    trained.fit(np.zeros((4, 8, 8, 1)), np.zeros(4), epochs=1, verbose=0)
    files["compiled"] = saved(trained, tmp, "compiled")
    files["big"] = saved(mlp(2048), tmp, "big")
    return files


def config_of(archive: bytes) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(keras_members(archive)["config.json"])
    return config


def with_config(archive: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    members = keras_members(archive)
    config = json.loads(members["config.json"])
    edit(config)
    members["config.json"] = json.dumps(config).encode()
    return keras_zip(members)


def layer_named(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        layer for layer in config["config"]["layers"] if layer["config"]["name"] == name
    )
    return found


def upload(client: TestClient, data: bytes, name: str = "m.keras", **headers: str) -> Any:
    return client.post("/v1/models", files={"file": (name, data)}, headers=headers)


def leftovers(settings: Settings) -> list[str]:
    root = models_dir(settings)
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def outside(tmp: Path, data: Path) -> set[str]:
    return {str(p) for p in tmp.rglob("*") if data not in p.parents and p != data}


def test_what_model_save_writes_is_taken_compiled_or_not(
    client: TestClient, settings: Settings, archives: dict[str, bytes]
) -> None:
    assert sorted(keras_members(archives["plain"])) == [
        "config.json",
        "metadata.json",
        "model.weights.h5",
    ]
    ids = []
    for kind, params in (("plain", 1210), ("compiled", 1210), ("functional", 4810)):
        resp = upload(client, archives[kind], name=f"{kind}.keras")
        assert resp.status_code == 201, resp.text
        body = resp.json()
        assert resp.headers["Location"] == f"/v1/models/{body['id']}"
        info = body["info"]
        assert info["params"] == params, kind
        assert info["input_shape"] == [8, 8, 1] and info["output_shape"] == [10]
        assert info["compiled"] is (kind == "compiled")
        assert info["keras_version"] == keras.__version__
        assert "hidden" in info["layers"]
        ids.append(body["id"])
    listed = client.get("/v1/models").json()["items"]
    assert [m["id"] for m in listed] == ids[::-1]
    assert client.get(f"/v1/models/{ids[0]}").json()["name"] == "plain.keras"
    stored = models_dir(settings) / ids[0]
    assert sorted(p.name for p in stored.iterdir()) == [
        "config.json",
        "metadata.json",
        "model.weights.h5",
    ]
    assert client.delete(f"/v1/models/{ids[0]}").status_code == 204
    assert not stored.exists()
    assert client.get(f"/v1/models/{ids[0]}").status_code == 404
    assert leftovers(settings) == sorted(ids[1:])


def _lambda(config: dict[str, Any]) -> None:
    hidden = layer_named(config, "hidden")
    hidden["class_name"] = "Lambda"
    hidden["config"] = {"name": "hidden", "function": {"class_name": "__lambda__"}}


def _registered(config: dict[str, Any]) -> None:
    layer_named(config, "hidden")["registered_name"] = "my_package>MyDense"


def _module(config: dict[str, Any]) -> None:
    hidden = layer_named(config, "hidden")
    hidden["module"], hidden["class_name"] = "os", "system"


def _missing_layer(config: dict[str, Any]) -> None:
    out = layer_named(config, "out")
    out["inbound_nodes"][0]["args"][0]["config"]["keras_history"] = ["ghost", 0, 0]


def _unbuilt(config: dict[str, Any]) -> None:
    config.pop("build_config")
    config["config"].pop("build_input_shape")
    config["config"]["layers"].pop(0)  # the InputLayer


def hostile(archives: dict[str, bytes]) -> dict[str, tuple[bytes, int]]:
    """Each hostile file, and the status it must get."""
    plain, members = archives["plain"], keras_members(archives["plain"])
    bomb = dict(members, **{"model.weights.h5": b"\0" * 20_000_000})
    bigger = dict(
        members, **{"model.weights.h5": keras_members(archives["big"])["model.weights.h5"]}
    )
    deep = dict(members, **{"config.json": b"[" * 100_000 + b"]" * 100_000})
    return {
        "Lambda layer": (with_config(plain, _lambda), 422),
        "registered_name": (with_config(plain, _registered), 422),
        "module outside Keras": (with_config(plain, _module), 422),
        "zip bomb": (keras_zip(bomb), 422),
        "member ../x": (keras_zip({**members, "../x": b"x"}), 422),
        "member /tmp/x": (keras_zip({**members, "/tmp/x": b"x"}), 422),
        "symlink member": (keras_zip(members, links=("model.weights.h5",)), 422),
        "weights larger than the architecture": (keras_zip(bigger), 422),
        "graph with a missing layer": (with_config(archives["functional"], _missing_layer), 422),
        "an assets folder": (keras_zip({**members, "assets/x.txt": b"x"}), 422),
        "no metadata.json": (
            keras_zip({k: v for k, v in members.items() if k != "metadata.json"}),
            422,
        ),
        "control: the members as saved": (keras_zip(members), 201),
        "JSON nested past recursion": (keras_zip(deep), 422),
        "not a zip": (b"PK\x03\x04 not really", 422),
        "no input shape": (with_config(plain, _unbuilt), 422),
    }


def test_hostile_model_files_are_refused_and_leave_nothing(
    tmp_path: Path, archives: dict[str, bytes]
) -> None:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'fitq.db'}")
    upgrade(settings.resolved_database_url)
    before = outside(tmp_path, data)
    answers: dict[str, tuple[int, str]] = {}
    with TestClient(create_app(settings)) as client:
        for what, (file, _) in hostile(archives).items():
            resp = upload(client, file)
            answers[what] = (resp.status_code, resp.text)
        kept = [m["id"] for m in client.get("/v1/models").json()["items"]]
    expected = {what: status for what, (_, status) in hostile(archives).items()}
    assert {k: v[0] for k, v in answers.items()} == expected, answers
    assert leftovers(settings) == kept and len(kept) == 1  # only the control
    assert outside(tmp_path, data) == before
    assert not (data / "artifacts" / "x").exists() and not (data / "x").exists()
    detail = json.loads(answers["Lambda layer"][1])["detail"]
    assert detail[0]["loc"][:3] == ["body", "file", "config.json"]
    assert "Lambda" in detail[0]["msg"]
    assert "more than the" in answers["weights larger than the architecture"][1]
    assert "decompresses" in answers["zip bomb"][1]
    assert "is a link" in answers["symlink member"][1]
    assert "unexpected member '../x'" in answers["member ../x"][1]
    assert "which the model does not hold" in answers["graph with a missing layer"][1]


def test_files_not_named_keras_and_bodies_over_the_cap_are_refused(
    tmp_path: Path, archives: dict[str, bytes]
) -> None:
    data = tmp_path / "data"
    settings = Settings(
        data_dir=data, database_url=f"sqlite:///{data / 'fitq.db'}", max_upload_bytes=4096
    )
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        assert upload(client, archives["plain"], name="m.h5").status_code == 422
        assert upload(client, archives["plain"]).status_code == 413
    assert leftovers(settings) == []


@pytest.fixture
def owners(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], Settings]]:
    data = tmp_path / "data"
    settings = Settings(data_dir=data, database_url=f"sqlite:///{data / 'fitq.db'}", auth="on")
    upgrade(settings.resolved_database_url)
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        headers = {n: {"Authorization": f"Bearer {create_token(s, n)}"} for n in ("ann", "bob")}
    with TestClient(create_app(settings)) as client:
        yield client, headers, settings


def uploaded_spec(model_id: str, **overrides: Any) -> dict[str, Any]:
    return digits_spec(**{"model": {"uploaded": model_id}, **overrides})


def errors(resp: Any) -> dict[str, str]:
    return {".".join(map(str, e["loc"][1:])): e["msg"] for e in resp.json()["detail"]}


def test_a_job_names_only_its_owners_upload_and_data_that_fits_it(
    owners: tuple[TestClient, dict[str, dict[str, str]], Settings], archives: dict[str, bytes]
) -> None:
    client, headers, _ = owners
    ann = upload(client, archives["plain"], **headers["ann"]).json()["id"]
    assert client.get(f"/v1/models/{ann}", headers=headers["bob"]).status_code == 404
    assert client.get("/v1/models", headers=headers["bob"]).json()["items"] == []
    assert client.delete(f"/v1/models/{ann}", headers=headers["bob"]).status_code == 404

    resp = client.post("/v1/jobs", json=uploaded_spec(ann), headers=headers["bob"])
    assert resp.status_code == 422
    assert "no uploaded model" in errors(resp)["model.uploaded"]

    wrong_shape = uploaded_spec(ann, **{"data.train": {"x": [[0.0] * 4] * 8, "y": [0] * 8}})
    wrong_shape["data"].pop("validation")
    resp = client.post("/v1/jobs", json=wrong_shape, headers=headers["ann"])
    assert resp.status_code == 422
    assert "the layer receives [None, 4]" in errors(resp)["model.uploaded"]

    resp = client.post(
        "/v1/jobs", json=uploaded_spec(ann, **{"model.freeze": ["nope"]}), headers=headers["ann"]
    )
    assert resp.status_code == 422
    assert "'nope'" in errors(resp)["model.freeze.0"]

    resp = client.post(
        "/v1/jobs",
        json=uploaded_spec(ann, **{"model.freeze": ["hidden"], "model.weights": False}),
        headers=headers["ann"],
    )
    assert resp.status_code == 201, resp.text
    job = resp.json()
    assert job["model_id"] == ann and job["parent_job_id"] is None
    assert job["spec"]["model"] == {"uploaded": ann, "weights": False, "freeze": ["hidden"]}
    assert client.delete(f"/v1/models/{ann}", headers=headers["ann"]).status_code == 409


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({"builtin": "mlp", "weights": True}, "weights"),
        ({"builtin": "mlp", "freeze": ["x"]}, "freeze"),
        ({"uploaded": "a", "from_job": "b"}, "exactly one"),
        ({"uploaded": "a", "checkpoint": "best"}, "checkpoint"),
        ({"from_job": "b", "checkpoint": "first"}, "checkpoint"),
        ({"from_job": "b", "checkpoint": 0}, "checkpoint"),
    ],
)
def test_model_sources_are_one_and_their_options_go_with_them(
    client: TestClient, model: dict[str, Any], field: str
) -> None:
    resp = client.post("/v1/jobs", json=digits_spec(**{"model": model}))
    assert resp.status_code == 422
    assert field in resp.text


def test_a_warm_start_names_a_finished_job_of_its_owner_with_that_checkpoint(
    owners: tuple[TestClient, dict[str, dict[str, str]], Settings],
) -> None:
    client, headers, settings = owners
    parent = client.post("/v1/jobs", json=digits_spec(), headers=headers["ann"]).json()["id"]

    def refused(owner: str, **model: Any) -> dict[str, str]:
        resp = client.post(
            "/v1/jobs",
            json=digits_spec(model={"from_job": parent, **model}),
            headers=headers[owner],
        )
        assert resp.status_code == 422, resp.text
        return errors(resp)

    assert "no job" in refused("bob")["model.from_job"]
    assert "expected a finished job" in refused("ann")["model.from_job"]

    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        from models.tables import Checkpoint, Job

        row = s.get(Job, parent)
        assert row is not None
        row.status = "succeeded"
        s.add(Checkpoint(job_id=parent, epoch=2, path="checkpoints/e2.keras", size_bytes=1))
        s.commit()
    assert "has no checkpoint 'best'" in refused("ann")["model.checkpoint"]
    assert "has no checkpoint 99" in refused("ann", checkpoint=99)["model.checkpoint"]
    assert "recorded no architecture" in refused("ann", checkpoint="last")["model.from_job"]

    job_dir = settings.job_dir(parent)
    (job_dir / "checkpoints").mkdir(parents=True)
    (job_dir / "model.json").write_text(json.dumps(copy.deepcopy(_MLP_CONFIG)))
    assert "is gone" in refused("ann", checkpoint="last")["model.checkpoint"]
    (job_dir / "checkpoints" / "e2.keras").write_bytes(b"weights")
    assert "layer 'x'" in refused("ann", checkpoint="last", freeze=["x"])["model.freeze.0"]

    resp = client.post(
        "/v1/jobs",
        json=digits_spec(model={"from_job": parent, "checkpoint": "last", "freeze": ["hidden"]}),
        headers=headers["ann"],
    )
    assert resp.status_code == 201, resp.text
    child = resp.json()
    assert child["parent_job_id"] == parent
    checkpoint_id = client.get(f"/v1/jobs/{parent}/checkpoints", headers=headers["ann"]).json()
    assert child["spec"]["model"]["checkpoint"] == checkpoint_id["items"][0]["id"]
    shown = client.get(f"/v1/jobs/{child['id']}", headers=headers["ann"]).json()
    assert shown["parent_job_id"] == parent


_MLP_CONFIG: dict[str, Any] = {}


@pytest.fixture(autouse=True, scope="module")
def _mlp_config(archives: dict[str, bytes]) -> None:
    _MLP_CONFIG.update(config_of(archives["plain"]))


def test_the_config_keras_writes_is_one_the_spec_accepts_too(
    client: TestClient, archives: dict[str, bytes]
) -> None:
    # An upload's config passes the same checks as model.keras_config.
    for kind in ("plain", "compiled", "functional"):
        spec = digits_spec(**{"model": {"keras_config": config_of(archives[kind])}})
        resp = client.post("/v1/jobs/validate", json=spec)
        assert resp.status_code == 200, (kind, resp.text)


def test_a_member_stored_uncompressed_is_read_as_well(
    client: TestClient, archives: dict[str, bytes]
) -> None:
    members = keras_members(archives["plain"])
    resp = upload(client, keras_zip(members, compression=zipfile.ZIP_STORED))
    assert resp.status_code == 201, resp.text
    assert resp.json()["info"]["params"] == 1210


def test_an_uploaded_model_of_two_outputs_is_refused_when_a_job_names_it(
    client: TestClient, tmp_path: Path
) -> None:
    pixels = keras.Input((8, 8, 1), name="pixels")
    hidden = keras.layers.Dense(8, name="hidden")(keras.layers.Flatten(name="flat")(pixels))
    heads = [keras.layers.Dense(10, name="a")(hidden), keras.layers.Dense(1, name="b")(hidden)]
    answer = upload(client, saved(keras.Model(pixels, heads), tmp_path, "two"))
    assert answer.status_code == 201, answer.text
    spec = digits_spec(**{"model": {"uploaded": answer.json()["id"]}})
    refused = client.post("/v1/jobs", json=spec)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["body", "model", "uploaded"]
    assert "outputs ['a', 'b']" in detail["msg"]
