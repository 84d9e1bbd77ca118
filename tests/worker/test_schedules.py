"""Learning-rate schedules and the recorded learning rate, on tiny real models.

The recorded ``lr`` of an epoch is the rate it trained with: the optimizer's rate when
the epoch began (with a per-step schedule, the rate of its first step). A job with a
schedule (the optimizer's, or LearningRateScheduler's) records what the same
``model.fit()`` in a plain script records (tests/worker/plain_schedules.py), and
resumes after a lost worker where the schedule was.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from typing_extensions import override

keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

from models.spec import JobSpec, ObjectSpec, ScheduleSpec  # noqa: E402
from tests.checks.test_schedules import SCHEDULES  # noqa: E402
from tests.factories import digits_spec, plain_run  # noqa: E402
from tests.worker.test_reporting import LOSS_ONLY, ListSink, tiny  # noqa: E402
from worker.training.reporting import ReportingCallback  # noqa: E402
from worker.training.runner import Resume, train  # noqa: E402
from worker.training.schedules import build_optimizer, build_schedule  # noqa: E402


class StepRates(keras.callbacks.Callback):  # type: ignore[misc]
    """The rates the optimizer applies in each epoch's steps, read before each step."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[list[float]] = []

    @override
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epochs.append([])

    @override
    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        self.epochs[-1].append(float(rate))


def test_recorded_lr_is_the_rate_the_epoch_trained_with_under_reduce_lr_on_plateau(
    tmp_path: Path,
) -> None:
    model, x, y = tiny()  # SGD at 0.01
    # min_delta 10: no epoch after the first improves the loss enough, so with
    # patience 0 the rate halves at the end of epochs 2, 3 and 4.
    plateau = keras.callbacks.ReduceLROnPlateau(
        monitor="loss", factor=0.5, patience=0, min_delta=10.0
    )
    sink, steps = ListSink(), StepRates()
    reporter = ReportingCallback(sink, tmp_path, [], ("loss", "auto"), LOSS_ONLY, interval=60)
    model.fit(x, y, epochs=4, batch_size=16, verbose=0, callbacks=[plateau, reporter, steps])

    trained = [epoch_rates[0] for epoch_rates in steps.epochs]
    assert all(len(set(rates)) == 1 for rates in steps.epochs)  # one rate per epoch
    assert trained == pytest.approx([0.01, 0.01, 0.005, 0.0025])
    recorded = [lr for _, _, lr in sink.epochs]
    assert recorded == trained  # epoch 2 trained at 0.01: recorded 0.01, not 0.005
    # Keras' own log key (ReduceLROnPlateau writes it) says the same.
    assert [m["learning_rate"] for _, m, _ in sink.epochs] == recorded


def test_recorded_lr_of_a_per_step_schedule_is_the_rate_of_the_epochs_first_step(
    tmp_path: Path,
) -> None:
    model, x, y = tiny()
    decay = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5)
    model.compile(keras.optimizers.SGD(decay), "sparse_categorical_crossentropy")
    sink, steps = ListSink(), StepRates()
    reporter = ReportingCallback(sink, tmp_path, [], ("loss", "auto"), LOSS_ONLY, interval=60)
    model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[reporter, steps])

    recorded = [lr for _, _, lr in sink.epochs]
    assert all(len(rates) == 4 and rates[0] > rates[-1] for rates in steps.epochs)
    assert recorded == [rates[0] for rates in steps.epochs]
    # 4 steps an epoch: epoch e begins at step 4 * (e - 1).
    assert recorded == pytest.approx([0.1 * 0.5 ** (4 * e / 3) for e in range(3)], rel=1e-6)


OPTIMIZER_DECAY = {
    "class_name": "Adam",
    "config": {
        "learning_rate": {
            "class_name": "ExponentialDecay",
            "config": {"initial_learning_rate": 0.01, "decay_steps": 10, "decay_rate": 0.5},
        }
    },
}
COSINE_WARMUP = {
    "class_name": "SGD",
    "config": {
        "momentum": 0.9,
        "learning_rate": {
            "module": "keras.optimizers.schedules",
            "class_name": "CosineDecay",
            "config": {
                "initial_learning_rate": 0.001,
                "decay_steps": 20,
                "alpha": 0.1,
                "warmup_target": 0.01,
                "warmup_steps": 10,
            },
            "registered_name": None,
        },
    },
}
SCHEDULER = {
    "type": "LearningRateScheduler",
    "schedule": {
        "class_name": "PiecewiseConstantDecay",
        "config": {"boundaries": [1, 2], "values": [0.01, 0.005, 0.001]},
    },
}


def _cosine(step: int) -> float:
    if step < 10:
        return 0.001 + (0.01 - 0.001) * step / 10
    done = min(step - 10, 20) / 20
    return 0.01 * (0.9 * 0.5 * (1 + math.cos(math.pi * done)) + 0.1)


# Each case: the spec's overrides, and the rate of each of the 4 epochs (10 steps each:
# 300 samples, batch 32), computed here without Keras.
CASES: dict[str, tuple[dict[str, Any], list[float]]] = {
    "exponential_decay": (
        {"compile.optimizer": OPTIMIZER_DECAY},
        [0.01 * 0.5 ** (10 * e / 10) for e in range(4)],
    ),
    "cosine_warmup": ({"compile.optimizer": COSINE_WARMUP}, [_cosine(10 * e) for e in range(4)]),
    # The scheduler at epoch index i: values[0] while i <= 1, then 0.005, then 0.001.
    "lr_scheduler": ({"callbacks": [SCHEDULER]}, [0.01, 0.01, 0.005, 0.001]),
}


def plain(case: str) -> dict[str, Any]:
    return plain_run("plain_schedules.py", case)


@pytest.mark.parametrize("case", list(CASES))
def test_a_scheduled_job_records_what_plain_fit_does(case: str, tmp_path: Path) -> None:
    overrides, rates = CASES[case]
    spec = JobSpec.model_validate(digits_spec(**{"fit.epochs": 4, **overrides}))
    sink = ListSink()
    outcome = train(spec, tmp_path / "job", sink)
    assert (outcome.status, outcome.stop_reason) == ("succeeded", "completed"), outcome.error
    expected = plain(case)

    assert [e for e, _, _ in sink.epochs] == [e for e, _ in expected["epochs"]] == [1, 2, 3, 4]
    for (epoch, metrics, _), (_, logs) in zip(sink.epochs, expected["epochs"], strict=True):
        assert set(metrics) == set(logs), epoch
        diff = max(abs(metrics[k] - v) for k, v in logs.items())
        assert diff <= 1e-6, (epoch, metrics, logs)
    recorded = [lr for _, _, lr in sink.epochs]
    assert recorded == expected["lr"]  # the rate of each epoch's first step, in the script
    assert recorded == pytest.approx(rates, rel=1e-6)
    assert len(set(recorded)) > 1
    if case == "lr_scheduler":  # Keras logs the rate it set: the same number
        assert [m["learning_rate"] for _, m, _ in sink.epochs] == recorded


@pytest.mark.parametrize("case", ["exponential_decay", "lr_scheduler"])
def test_a_resumed_attempt_goes_on_where_the_schedule_was(case: str, tmp_path: Path) -> None:
    overrides, rates = CASES[case]
    spec = JobSpec.model_validate(
        digits_spec(**{"fit.epochs": 4, "fit.shuffle": False, **overrides})
    )
    straight = ListSink()
    assert train(spec, tmp_path / "straight", straight).status == "succeeded"

    # An attempt that died after epoch 2 was recorded: its backups are on disk.
    first = ListSink()
    two = JobSpec.model_validate(
        digits_spec(**{"fit.epochs": 2, "fit.shuffle": False, **overrides})
    )
    assert train(two, tmp_path / "job", first).status == "succeeded"
    resumed = ListSink()
    resume = Resume(last_epoch=2, callback_states={2: first.states[2]})
    outcome = train(spec, tmp_path / "job", resumed, resume=resume)

    assert outcome.status == "succeeded", outcome.error
    assert [e for e, _, _ in resumed.epochs] == [3, 4]
    assert [lr for _, _, lr in resumed.epochs] == [lr for _, _, lr in straight.epochs[2:]]
    assert [lr for _, _, lr in resumed.epochs] == pytest.approx(rates[2:], rel=1e-6)
    for (_, metrics, _), (_, expected, _) in zip(resumed.epochs, straight.epochs[2:], strict=True):
        assert metrics == pytest.approx(expected, rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_every_accepted_schedule_builds_the_keras_object_with_those_arguments(name: str) -> None:
    # The allowlist's arguments are Keras' own: each config the checks accept builds,
    # and gives what Keras' class called with the same arguments gives.
    built = build_schedule(ScheduleSpec(class_name=name, config=SCHEDULES[name]))
    direct = getattr(keras.optimizers.schedules, name)(**SCHEDULES[name])
    assert type(built) is type(direct)
    assert built.get_config() == direct.get_config()
    steps = [0, 1, 50, 99, 100, 101, 150, 250, 5000]
    got = [float(keras.ops.convert_to_numpy(built(s))) for s in steps]
    assert got == [float(keras.ops.convert_to_numpy(direct(s))) for s in steps]


def test_whole_numbers_are_rates_as_json_means_them() -> None:
    # JSON's 1 is 1.0. Keras refuses an int learning rate, and a schedule given ints
    # would compute in integers (0.5 cast to int32 is 0).
    optimizer = build_optimizer(ObjectSpec(class_name="SGD", config={"learning_rate": 1}))
    assert not isinstance(optimizer, str)
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == 1.0
    config = {"initial_learning_rate": 1, "decay_steps": 2, "decay_rate": 0.5}
    schedule = build_schedule(ScheduleSpec(class_name="ExponentialDecay", config=config))
    assert float(keras.ops.convert_to_numpy(schedule(2))) == 0.5
    optimizer = build_optimizer(
        ObjectSpec(
            class_name="Adam",
            config={"learning_rate": {"class_name": "ExponentialDecay", "config": config}},
        )
    )
    assert not isinstance(optimizer, str)
    optimizer.build([keras.Variable(np.zeros(2, "float32"))])
    assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == 1.0  # at step 0
