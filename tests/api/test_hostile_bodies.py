"""Hostile request bodies: refused from the headers when anonymous, refused within
bounds (depth, nodes, alias expansion) when authorised, never echoed in full, never
answered with a 500 or with a server path."""

from __future__ import annotations

import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient

from api.main import create_app
from api.tokens import create_token, revoke_token
from core.db import make_engine, make_session_factory
from core.settings import Settings
from migrations.migrate import upgrade
from storage.uploads import npz_bytes
from tests.factories import digits_spec

YAML = {"Content-Type": "application/yaml"}
JSON = {"Content-Type": "application/json"}


def billion_laughs(levels: int = 7) -> bytes:
    """Ten strings, then ``levels - 1`` lists of ten aliases to the list before."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]")
    return ("\n".join(lines) + "\n").encode()


def flat_yaml_list(size: int = 4 << 20) -> bytes:
    return b"- 1\n" * (size // 4)


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def nested_json_spec(depth: int) -> bytes:
    """A spec ``depth`` levels deep: two inline samples nested in lists of one."""
    sample = "[" * (depth - 4) + "0.5" + "]" * (depth - 4)
    spec = json.dumps(
        digits_spec(**{"data.train": {"x": "X", "y": [0, 1]}, "data.validation": ...})
    )
    return spec.replace('"X"', f"[{sample}, {sample}]").encode()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Settings]]:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'api.db'}",
        auth="on",
    )
    upgrade(settings.resolved_database_url)
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        token = create_token(s, "alice")
    with TestClient(create_app(settings)) as client:
        yield client, {"Authorization": f"Bearer {token}"}, settings


class Tracked:
    """A request body that records whether anyone read it."""

    def __init__(self, body: bytes) -> None:
        self.body = body
        self.consumed = False

    def __iter__(self) -> Iterator[bytes]:
        self.consumed = True
        yield self.body


def multipart(files: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    request = httpx.Request("POST", "http://x/", files=files)
    return request.read(), {"Content-Type": request.headers["content-type"]}


def test_an_anonymous_request_is_refused_before_its_body_is_read(secured: Any) -> None:
    client, alice, _ = secured
    upload, upload_type = multipart({"file": ("d.npz", b"\0" * (1 << 20))})
    cases = [
        ("/v1/jobs", billion_laughs(), YAML),
        ("/v1/jobs", flat_yaml_list(), {}),
        ("/v1/jobs/validate", billion_laughs(), YAML),
        ("/v1/jobs", json.dumps(digits_spec()).encode(), JSON),
        ("/v1/datasets", upload, upload_type),
        ("/v1/jobs/0123/cancel", b"{}", JSON),
    ]
    for token in (None, "fitq_forged", "x" * 100_000):
        for path, body, headers in cases:
            sent = Tracked(body)
            auth = {"Authorization": f"Bearer {token}"} if token else {}
            start = time.perf_counter()
            resp = client.post(path, content=sent, headers={**headers, **auth})
            elapsed = time.perf_counter() - start
            assert resp.status_code == 401, (path, resp.status_code, resp.text[:300])
            assert resp.headers["www-authenticate"] == "Bearer"
            assert "fitq token create" in resp.json()["detail"]
            assert not sent.consumed, f"the body of an anonymous POST {path} was read"
            assert elapsed < 1.0, f"POST {path} took {elapsed:.2f}s to refuse"
    assert client.get("/v1/jobs", headers=alice).json()["items"] == []


def test_a_revoked_token_is_refused_on_a_body_route_at_once(secured: Any) -> None:
    client, alice, settings = secured
    assert client.post("/v1/jobs/validate", json=digits_spec(), headers=alice).status_code == 200
    with make_session_factory(make_engine(settings.resolved_database_url))() as s:
        revoke_token(s, "alice")
    sent = Tracked(json.dumps(digits_spec()).encode())
    resp = client.post("/v1/jobs/validate", content=sent, headers={**alice, **JSON})
    assert resp.status_code == 401 and not sent.consumed


def test_billion_laughs_from_a_token_holder_is_refused_in_milliseconds(secured: Any) -> None:
    client, alice, _ = secured
    for path in ("/v1/jobs", "/v1/jobs/validate"):
        start = time.perf_counter()
        resp = client.post(path, content=billion_laughs(), headers={**alice, **YAML})
        elapsed = time.perf_counter() - start
        assert resp.status_code == 413, resp.text[:500]
        detail = resp.json()["detail"]
        assert "FITQ_MAX_BODY_NODES=100000" in detail and "alias" in detail
        assert elapsed < 0.5, f"billion laughs took {elapsed:.2f}s to refuse"
    assert client.get("/healthz").status_code == 200


def test_an_alias_to_a_long_string_used_many_times_is_refused(secured: Any) -> None:
    client, alice, _ = secured
    body = b'name: &s "' + b"A" * (1 << 20) + b'"\nmany: [' + b",".join([b"*s"] * 100) + b"]\n"
    start = time.perf_counter()
    resp = client.post("/v1/jobs", content=body, headers={**alice, **YAML})
    assert resp.status_code == 413, resp.text[:500]
    assert "FITQ_MAX_BODY_BYTES" in resp.json()["detail"]
    assert time.perf_counter() - start < 1.0


def test_a_flat_4_mib_list_is_refused_at_the_node_limit(secured: Any) -> None:
    client, alice, _ = secured
    numbers = json.dumps(list(range(1_500_000))).encode()
    for body, headers in ((flat_yaml_list(), YAML), (flat_yaml_list(), {}), (numbers, JSON)):
        start = time.perf_counter()
        resp = client.post("/v1/jobs", content=body, headers={**alice, **headers})
        elapsed = time.perf_counter() - start
        assert resp.status_code == 413, resp.text[:500]
        assert "FITQ_MAX_BODY_NODES=100000" in resp.json()["detail"]
        assert elapsed < 1.5, f"a {len(body)}-byte flat list took {elapsed:.2f}s to refuse"


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_deep_nesting_is_a_422_naming_the_limit(secured: Any, depth: int) -> None:
    client, alice, _ = secured
    sent = [
        (nested(depth), YAML),
        (nested(depth), {}),
        (nested(depth), JSON),
        (nested_json_spec(depth), JSON),
        (nested_json_spec(depth), YAML),
    ]
    for body, headers in sent:
        resp = client.post("/v1/jobs", content=body, headers={**alice, **headers})
        assert resp.status_code == 422, (headers, resp.status_code, resp.text[:300])
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body"] and error["type"] == "too_deep"
        assert "FITQ_MAX_BODY_DEPTH=64" in error["msg"]


def test_nesting_within_the_limit_reaches_the_spec_checks(secured: Any) -> None:
    client, alice, _ = secured
    for headers in (JSON, YAML):
        resp = client.post(
            "/v1/jobs/validate", content=nested_json_spec(64), headers=alice | headers
        )
        assert resp.status_code == 422, resp.text[:500]
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "data", "train", "x"], error
        assert "nested deeper than 5 levels" in error["msg"]


def test_yaml_anchors_and_merge_keys_still_work(secured: Any) -> None:
    client, alice, _ = secured
    body = b"""
name: anchors
compile: &c {optimizer: adam, loss: sparse_categorical_crossentropy, metrics: [accuracy]}
model: {builtin: mlp, params: {hidden_units: [16]}}
data:
  train: &d {dataset: "builtin:digits", split: train, take: 300}
  validation: {<<: *d, split: validation, take: 100}
fit: {batch_size: 32, epochs: 2}
"""
    resp = client.post("/v1/jobs", content=body, headers={**alice, **YAML})
    assert resp.status_code == 201, resp.text
    data = resp.json()["spec"]["data"]
    assert data["validation"]["dataset"] == "builtin:digits"
    assert (data["validation"]["split"], data["validation"]["take"]) == ("validation", 100)
    assert resp.json()["spec"]["compile"]["metrics"] == ["accuracy"]


@pytest.mark.parametrize(
    "body",
    [
        b"fit: {epochs: " + b"1" * 5000 + b"}\n",
        b"fit: {epochs: 1" + b":1" * 20000 + b"}\n",
        b"a: &a [*a]\n",
        b"fit: {epochs: *nowhere}\n",
    ],
    ids=["5000-digit int", "sexagesimal bomb", "recursive alias", "undefined alias"],
)
def test_odd_yaml_is_a_quick_422(secured: Any, body: bytes) -> None:
    client, alice, _ = secured
    start = time.perf_counter()
    resp = client.post("/v1/jobs", content=body, headers={**alice, **YAML})
    assert resp.status_code == 422, resp.text[:500]
    assert len(resp.content) < 2000
    assert time.perf_counter() - start < 1.0


def test_a_422_echoes_a_bounded_excerpt_of_a_long_input(secured: Any) -> None:
    client, alice, _ = secured
    long_name = "N" * (15 << 20)
    for body, headers in (
        (json.dumps(digits_spec(name=long_name)).encode(), JSON),
        (yaml.safe_dump(digits_spec(name=...)).encode() + f"name: {long_name}\n".encode(), YAML),
    ):
        resp = client.post("/v1/jobs", content=body, headers={**alice, **headers})
        assert resp.status_code == 422, resp.text[:500]
        assert len(resp.content) < 4000, f"a {len(resp.content)}-byte answer"
        (error,) = resp.json()["detail"]
        assert error["loc"] == ["body", "name"]
        assert f"{len(long_name) - 200} more characters" in error["msg"]


def test_a_422_lists_a_bounded_number_of_errors(secured: Any) -> None:
    client, alice, _ = secured
    weights = {f"class {i}": "heavy" for i in range(20_000)}
    resp = client.post("/v1/jobs", json=digits_spec(**{"fit.class_weight": weights}), headers=alice)
    assert resp.status_code == 422
    assert len(resp.content) < 32_000, f"a {len(resp.content)}-byte answer"
    detail = resp.json()["detail"]
    assert len(detail) == 51 and detail[-1]["type"] == "too_many_errors"
    assert detail[-1]["loc"] == ["body"]
    assert f"{2 * 20_000 + 1 - 50} more errors left out" in detail[-1]["msg"], detail[-1]


def test_errors_never_show_server_paths(secured: Any, tmp_path: Path) -> None:
    client, alice, settings = secured
    image_zip = io.BytesIO()
    with zipfile.ZipFile(image_zip, "w") as z:
        z.writestr("cats/a.png", b"not an image")
        z.writestr("dogs/b.png", b"not an image either")
    answers = [
        client.post("/v1/datasets", headers=alice, files={"file": ("d.zip", image_zip.getvalue())}),
        client.post(
            "/v1/datasets",
            headers=alice,
            files={"file": ("d.npz", npz_bytes(x=np.zeros((4, 2)), y=np.zeros(3)))},
        ),
        client.post("/v1/datasets", headers=alice, files={"file": ("d.npz", b"PK\3\4junk")}),
    ]
    for resp in answers:
        assert resp.status_code == 422, resp.text
        assert str(tmp_path) not in resp.text and str(settings.resolved_data_dir) not in resp.text
    assert "cats/a.png" in answers[0].text
