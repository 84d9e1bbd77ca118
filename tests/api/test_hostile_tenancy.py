"""A hostile user's labels, values, idempotency keys and token names hurt nobody else."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.main import create_app
from api.tokens import create_token, list_tokens, revoke_token
from core.db import make_engine, make_session_factory
from core.errors import Conflict
from core.settings import Settings
from migrations.migrate import upgrade
from models.tables import ApiToken, Dataset
from storage.uploads import npz_bytes
from tests.factories import digits_spec, image_zip


def upload(client: TestClient, data: bytes, headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/datasets", files={"file": ("d.npz", data)}, headers=headers or {})


def regression_on(train: dict[str, Any], loss: str = "mse") -> dict[str, Any]:
    return digits_spec(
        **{
            "data.train": train,
            "data.validation": ...,
            "compile.loss": loss,
            "compile.metrics": [],
        }
    )


def session_of(settings: Settings) -> Session:
    return make_session_factory(make_engine(settings.resolved_database_url))()


def leftovers(settings: Settings) -> list[str]:
    root = settings.resolved_artifacts_dir / "datasets"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# Labels


def test_one_huge_label_gives_small_metadata_and_a_usable_dataset(
    client: TestClient, settings: Settings
) -> None:
    data = npz_bytes(x=np.zeros((1, 2), dtype=np.float32), y=np.array([20_000_000]))
    assert len(data) < 1000
    resp = upload(client, data)
    assert resp.status_code == 201, resp.text[:500]
    assert len(resp.content) < 10_000
    train = resp.json()["splits"]["train"]
    assert train["n_classes"] is None and train["class_counts"] is None
    assert train["y_min"] == 20_000_000 and train["y_max"] == 20_000_000
    with session_of(settings) as s:
        stored = s.get(Dataset, resp.json()["id"])
        assert stored is not None and len(json.dumps(stored.info)) < 10_000
    listing = client.get("/v1/datasets")
    assert listing.status_code == 200 and len(listing.content) < 10_000

    regression = client.post("/v1/jobs", json=regression_on({"dataset": resp.json()["id"]}))
    assert regression.status_code == 201, regression.text[:500]
    as_classes = client.post(
        "/v1/jobs",
        json=regression_on({"dataset": resp.json()["id"]}, "sparse_categorical_crossentropy"),
    )
    assert as_classes.status_code == 422
    assert ["body", "compile", "loss"] in [e["loc"] for e in as_classes.json()["detail"]]


def test_small_integer_labels_still_get_their_class_histogram(client: TestClient) -> None:
    resp = upload(client, npz_bytes(x=np.zeros((6, 2)), y=np.array([0.0, 2, 2, 1, 2, 0])))
    assert resp.status_code == 201
    train = resp.json()["splits"]["train"]
    assert train["n_classes"] == 3 and train["class_counts"] == [2, 1, 3]
    assert train["y_min"] == 0 and train["y_max"] == 2


def test_labels_past_the_class_cap_get_no_histogram(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'a.db'}", max_label_classes=5
    )
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        below = upload(client, npz_bytes(x=np.zeros((2, 1)), y=np.array([0, 4])))
        at_cap = upload(client, npz_bytes(x=np.zeros((2, 1)), y=np.array([0, 5])))
        negative = upload(client, npz_bytes(x=np.zeros((2, 1)), y=np.array([-1, 2])))
        fraction = upload(client, npz_bytes(x=np.zeros((2, 1)), y=np.array([0.5, 2])))
    assert below.json()["splits"]["train"]["class_counts"] == [1, 0, 0, 0, 1]
    for resp in (at_cap, negative, fraction):
        train = resp.json()["splits"]["train"]
        assert train["n_classes"] is None and train["class_counts"] is None, train


def test_an_image_archive_holds_at_most_the_class_cap_of_folders(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", database_url=f"sqlite:///{tmp_path / 'a.db'}", max_label_classes=2
    )
    upgrade(settings.resolved_database_url)
    with TestClient(create_app(settings)) as client:
        two = image_zip(per_class=2, size=8, classes=("a", "b"))
        three = image_zip(per_class=2, size=8, classes=("a", "b", "c"))
        ok = client.post("/v1/datasets", files={"file": ("i.zip", two)})
        over = client.post("/v1/datasets", files={"file": ("i.zip", three)})
    assert ok.status_code == 201, ok.text[:500]
    train = ok.json()["splits"]["train"]
    assert train["class_counts"] == [2, 2] and (train["y_min"], train["y_max"]) == (0, 1)
    assert over.status_code == 422
    assert "3 class folders" in over.text and "FITQ_MAX_LABEL_CLASSES" in over.text
    assert leftovers(settings) == [ok.json()["id"]]


def test_an_inline_huge_label_allocates_nothing_in_proportion(client: TestClient) -> None:
    spec = regression_on({"x": [[0.0], [1.0]], "y": [3e7, 1.0]})
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        started = time.monotonic()
        resp = client.post("/v1/jobs", json=spec)
        took = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 30 * 1024**2, f"validating two labels took {peak / 1024**2:.0f} MB"
    assert resp.status_code == 201, resp.text[:500]
    assert took < 5

    started = time.monotonic()
    as_classes = client.post(
        "/v1/jobs",
        json=regression_on({"x": [[0.0]], "y": [1e15]}, "sparse_categorical_crossentropy"),
    )
    assert time.monotonic() - started < 5
    assert as_classes.status_code == 422
    assert ["body", "compile", "loss"] in [e["loc"] for e in as_classes.json()["detail"]]


# Values


@pytest.mark.parametrize(
    ("arrays", "named", "index", "value"),
    [
        ({"x": np.full((3, 2), np.nan), "y": np.zeros(3)}, "x", "[0, 0]", "nan"),
        ({"x": np.zeros((3, 2)), "y": np.full(3, np.nan)}, "y", "[0]", "nan"),
        (
            {"x": np.zeros((3, 2)), "y": np.array([0.0, 1.0, np.inf], dtype=np.float32)},
            "y",
            "[2]",
            "inf",
        ),
        (
            {
                "x": np.zeros((3, 2, 2)),
                "y": np.zeros(3),
                "x_val": np.where(np.arange(8).reshape(2, 2, 2) == 5, -np.inf, 0.0),
                "y_val": np.zeros(2),
            },
            "x_val",
            "[1, 0, 1]",
            "-inf",
        ),
    ],
    ids=["all-nan-x", "all-nan-y", "inf-y", "neg-inf-x_val"],
)
def test_nan_and_infinity_in_an_upload_are_refused(
    client: TestClient,
    settings: Settings,
    arrays: dict[str, np.ndarray],
    named: str,
    index: str,
    value: str,
) -> None:
    resp = upload(client, npz_bytes(**arrays))
    assert resp.status_code == 422, resp.text[:500]
    (error,) = resp.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert f"{named}{index} is {value}" in error["msg"], error["msg"]
    assert "finite" in error["msg"]
    assert leftovers(settings) == []
    assert client.get("/v1/datasets").json()["items"] == []


# Owners


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_idempotency_keys_of_two_owners_never_collide(secured: Any) -> None:
    client, settings = secured
    with session_of(settings) as s:
        team, team_ml = create_token(s, "team"), create_token(s, "team:ml")
    first = client.post(
        "/v1/jobs", json=digits_spec(), headers={**bearer(team), "Idempotency-Key": "ml:K"}
    )
    second = client.post(
        "/v1/jobs", json=digits_spec(), headers={**bearer(team_ml), "Idempotency-Key": "K"}
    )
    assert first.status_code == 201 and second.status_code == 201, second.text[:500]
    assert first.json()["id"] != second.json()["id"]

    again = client.post(
        "/v1/jobs", json=digits_spec(), headers={**bearer(team_ml), "Idempotency-Key": "K"}
    )
    assert again.status_code == 200 and again.json()["id"] == second.json()["id"]
    other_body = client.post(
        "/v1/jobs",
        json=digits_spec(**{"fit.epochs": 2}),
        headers={**bearer(team_ml), "Idempotency-Key": "K"},
    )
    assert other_body.status_code == 409
    assert second.json()["id"] in other_body.json()["detail"]
    assert first.json()["id"] not in other_body.json()["detail"]


def test_a_revoked_name_can_be_issued_again_and_keeps_its_jobs(secured: Any) -> None:
    client, settings = secured
    with session_of(settings) as s:
        old = create_token(s, "alice")
    job = client.post("/v1/jobs", json=digits_spec(), headers=bearer(old)).json()["id"]
    ds = upload(client, npz_bytes(x=np.zeros((4, 2)), y=np.zeros(4)), bearer(old)).json()["id"]

    with session_of(settings) as s:
        revoke_token(s, "alice")
        new = create_token(s, "alice")
        with pytest.raises(Conflict, match="alice"):
            create_token(s, "alice")
        rows = [(t.name, t.revoked_at is not None) for t in list_tokens(s)]
    assert rows == [("alice", True), ("alice", False)]

    assert client.get("/v1/jobs", headers=bearer(old)).status_code == 401
    assert client.get(f"/v1/jobs/{job}", headers=bearer(new)).status_code == 200
    assert [j["id"] for j in client.get("/v1/jobs", headers=bearer(new)).json()["items"]] == [job]
    assert client.get(f"/v1/datasets/{ds}", headers=bearer(new)).status_code == 200
    resubmitted = client.post(
        "/v1/jobs",
        json=digits_spec(**{"data.train": {"dataset": ds}, "data.validation": ...}),
        headers=bearer(new),
    )
    assert resubmitted.status_code == 201, resubmitted.text[:500]


def test_the_database_holds_one_active_token_per_name(secured: Any) -> None:
    from sqlalchemy.exc import IntegrityError

    from api.tokens import digest
    from models.tables import utcnow

    _, settings = secured
    with session_of(settings) as s:
        create_token(s, "carol")
        s.add(ApiToken(name="carol", token_hash=digest("fitq_x"), admin=False, created_at=utcnow()))
        with pytest.raises(IntegrityError):
            s.commit()
        s.rollback()
        assert len(s.scalars(select(ApiToken).where(ApiToken.name == "carol")).all()) == 1
