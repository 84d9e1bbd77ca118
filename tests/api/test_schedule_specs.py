"""Learning-rate schedules through the API: accepted as Keras takes them, refused with a
422 naming the argument otherwise, and nothing queued for a refused spec."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.factories import digits_spec

DECAY = {
    "class_name": "ExponentialDecay",
    "config": {"initial_learning_rate": 0.01, "decay_steps": 100, "decay_rate": 0.9},
}
ADAM_DECAY = {"class_name": "Adam", "config": {"learning_rate": DECAY}}
LR = ["body", "compile", "optimizer", "config", "learning_rate"]


def refused(client: TestClient, spec: dict[str, Any]) -> list[dict[str, Any]]:
    resp = client.post("/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.text[:2000]
    assert client.get("/v1/jobs").json()["items"] == []
    detail: list[dict[str, Any]] = resp.json()["detail"]
    return detail


def has(detail: list[dict[str, Any]], loc: list[Any], *parts: str) -> bool:
    return any(e["loc"] == loc and all(p in e["msg"] for p in parts) for e in detail)


def test_a_schedule_as_learning_rate_and_a_learning_rate_scheduler_are_accepted(
    client: TestClient,
) -> None:
    warmup = {
        "class_name": "CosineDecay",
        "config": {
            "initial_learning_rate": 0.0,
            "decay_steps": 1000,
            "warmup_target": 0.01,
            "warmup_steps": 100,
        },
    }
    resp = client.post(
        "/v1/jobs",
        json=digits_spec(
            **{"compile.optimizer": {"class_name": "SGD", "config": {"learning_rate": warmup}}}
        ),
    )
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["compile"]["optimizer"]["config"]["learning_rate"] == warmup

    scheduler = {"type": "LearningRateScheduler", "schedule": DECAY, "verbose": 1}
    resp = client.post("/v1/jobs", json=digits_spec(callbacks=[scheduler]))
    assert resp.status_code == 201, resp.text
    stored = resp.json()["spec"]["callbacks"][0]
    assert (stored["type"], stored["schedule"]["class_name"], stored["verbose"]) == (
        "LearningRateScheduler",
        "ExponentialDecay",
        1,
    )
    assert stored["schedule"]["config"] == DECAY["config"]


def test_a_bad_schedule_argument_is_refused_at_its_path(client: TestClient) -> None:
    bad = {"class_name": "ExponentialDecay", "config": {**DECAY["config"], "decay_steps": 0}}
    optimizer = {"class_name": "Adam", "config": {"learning_rate": bad}}
    detail = refused(client, digits_spec(**{"compile.optimizer": optimizer}))
    assert has(detail, [*LR, "config", "decay_steps"], "decay_steps=0", "> 0"), detail


def test_an_unknown_scheduler_schedule_is_refused(client: TestClient) -> None:
    scheduler = {"type": "LearningRateScheduler", "schedule": {"class_name": "StepDecay"}}
    detail = refused(client, digits_spec(callbacks=[scheduler]))
    loc = ["body", "callbacks", 0, "schedule", "class_name"]
    assert has(detail, loc, "'StepDecay'", "PiecewiseConstantDecay"), detail


def test_reduce_lr_on_plateau_over_an_optimizer_schedule_is_refused(client: TestClient) -> None:
    spec = digits_spec(
        **{"compile.optimizer": ADAM_DECAY, "callbacks": [{"type": "ReduceLROnPlateau"}]}
    )
    detail = refused(client, spec)
    assert has(detail, ["body", "callbacks", 0, "type"], "ReduceLROnPlateau", "a schedule"), detail
