"""The insight rules on hand-written histories."""

from __future__ import annotations

import math
from typing import Any

import pytest

from api.insight import Epoch, analyse


def rows(**series: list[float | None]) -> list[Epoch]:
    n = max(len(v) for v in series.values())
    out = []
    for i in range(n):
        metrics = {k: v[i] for k, v in series.items() if i < len(v) and v[i] is not None}
        out.append(Epoch(i + 1, metrics))
    return out


def spec(*callbacks: dict[str, Any]) -> dict[str, Any]:
    compiled = {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}
    return {"compile": compiled, "callbacks": list(callbacks)}


FALLING = [2.0, 1.2, 0.8, 0.5, 0.3, 0.2, 0.12, 0.08, 0.05, 0.03]


def test_the_monitor_is_the_first_monitoring_callbacks_and_the_best_is_the_stored_one() -> None:
    history = rows(loss=FALLING, val_accuracy=[0.5, 0.7, 0.9, 0.8, 0.85, 0.8, 0.7, 0.7, 0.7, 0.6])
    stored = {"epoch": 3, "monitor": "val_accuracy", "value": 0.9}
    insight = analyse(
        spec({"type": "ModelCheckpoint", "filepath": "m.keras", "monitor": "val_accuracy"}),
        history,
        "running",
        None,
        stored,
    )
    assert (insight.monitor, insight.mode, insight.best_epoch) == ("val_accuracy", "max", 3)
    assert insight.best_value == 0.9
    plain = analyse(spec(), rows(loss=[3.0, 1.0, 2.0]), "running", None, None)
    assert (plain.monitor, plain.mode, plain.best_epoch) == ("loss", "min", None)
    # A best stored for another monitor (an older spec's) is not shown as this one's.
    other = analyse(spec(), rows(loss=[3.0, 1.0]), "running", None, stored)
    assert other.best_epoch is None


def test_a_renamed_metric_keeps_its_direction() -> None:
    compiled = {
        "loss": "binary_crossentropy",
        "metrics": [{"class_name": "AUC", "config": {"name": "roc"}}],
    }
    early = {"type": "EarlyStopping", "monitor": "val_roc", "restore_best_weights": True}
    history = rows(loss=FALLING[:4], val_roc=[0.6, 0.8, 0.7, 0.75])
    insight = analyse(
        {"compile": compiled, "callbacks": [early]}, history, "succeeded", "completed"
    )
    assert (insight.monitor, insight.mode, insight.final_weights_epoch) == ("val_roc", "max", 2)


def test_rising_validation_loss_while_training_loss_falls_is_overfitting() -> None:
    val = [2.0, 1.4, 1.0, 0.8, 0.7, 0.72, 0.75, 0.8, 0.86, 0.9]
    insight = analyse(spec(), rows(loss=FALLING, val_loss=val), "succeeded", "completed")
    assert [(f.kind, f.epoch) for f in insight.findings] == [("overfitting", 6)]
    assert insight.overfitting_epoch == 6


def test_noise_around_a_plateau_is_not_overfitting() -> None:
    val = [2.0, 1.4, 1.0, 0.8, 0.7, 0.705, 0.698, 0.703, 0.701, 0.704]
    insight = analyse(spec(), rows(loss=FALLING, val_loss=val), "succeeded", "completed")
    assert insight.findings == []


def test_validation_worse_but_training_flat_is_not_overfitting() -> None:
    loss = [2.0, 1.4, 1.0, 0.8, 0.7, 0.7, 0.69, 0.7, 0.7, 0.69]
    val = [2.0, 1.4, 1.0, 0.8, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    insight = analyse(spec(), rows(loss=loss, val_loss=val), "running", None)
    assert insight.overfitting_epoch is None


def test_a_widening_gap_without_a_new_best_is_overfitting() -> None:
    loss = [1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1, 0.05]
    val = [1.1, 0.9, 0.7, 0.71, 0.705, 0.702, 0.703, 0.704]
    insight = analyse(spec(), rows(loss=loss, val_loss=val), "running", None)
    assert [(f.kind, f.epoch) for f in insight.findings] == [("overfitting", 4)]
    assert "gap" in insight.findings[0].message


def test_sparse_validations_count_validations_not_epochs() -> None:
    # validation_freq=2: val_loss on even epochs only
    val: list[float | None] = [None, 1.0, None, 0.6, None, 0.65, None, 0.7, None, 0.8]
    insight = analyse(spec(), rows(loss=FALLING, val_loss=val), "running", None)
    assert insight.overfitting_epoch == 6


def test_nan_loss_is_divergence_at_its_epoch() -> None:
    history = rows(loss=[1.0, 0.8, math.nan, math.nan])
    insight = analyse(spec(), history, "failed", "nan_loss")
    assert [(f.kind, f.epoch) for f in insight.findings] == [("divergence", 3)]


def test_a_null_loss_as_stored_for_nan_is_divergence() -> None:
    history = [Epoch(1, {"loss": 1.0}), Epoch(2, {"loss": None, "val_loss": None})]
    insight = analyse(spec(), history, "failed", "nan_loss")
    assert [(f.kind, f.epoch) for f in insight.findings] == [("divergence", 2)]
    assert "NaN or infinite" in insight.findings[0].message
    # a row without the key at all (validation-only metrics) is no finding
    assert analyse(spec(), [Epoch(1, {"val_loss": 1.0})], "running", None).findings == []


def test_training_loss_rising_at_the_end_is_divergence() -> None:
    insight = analyse(spec(), rows(loss=[1.0, 0.5, 0.4, 0.7, 1.5, 4.0]), "running", None)
    assert [(f.kind, f.epoch) for f in insight.findings] == [("divergence", 4)]


def test_still_learning_at_the_last_epoch_is_underfitting_once_finished() -> None:
    loss = [2.0, 1.7, 1.45, 1.25, 1.08, 0.93, 0.8]
    val = [2.1, 1.8, 1.55, 1.35, 1.2, 1.05, 0.95]
    history = rows(loss=loss, val_loss=val)
    assert analyse(spec(), history, "running", None).findings == []
    done = analyse(spec(), history, "succeeded", "completed")
    assert [(f.kind, f.epoch) for f in done.findings] == [("underfitting", 5)]
    assert "fit.epochs" in done.findings[0].remedy


def test_high_flat_loss_is_underfitting() -> None:
    loss = [2.4, 2.31, 2.305, 2.303, 2.303, 2.302, 2.303, 2.302]
    insight = analyse(spec(), rows(loss=loss), "succeeded", "completed")
    assert [f.kind for f in insight.findings] == ["underfitting"]
    assert insight.findings[0].epoch == 2


def test_restored_weights_replay_early_stopping() -> None:
    early = {"type": "EarlyStopping", "monitor": "val_loss", "restore_best_weights": True}
    val = [1.0, 0.8, 0.79, 0.9, 0.95]
    history = rows(loss=FALLING[:5], val_loss=val)
    insight = analyse(spec(early), history, "succeeded", "early_stopping")
    assert insight.final_weights_epoch == 3 and insight.early_stopping_epoch == 5
    # min_delta: 0.79 is not better than 0.8 by 0.05; start_from_epoch skips epoch 1
    strict = {**early, "min_delta": 0.05, "start_from_epoch": 1}
    insight = analyse(spec(strict), history, "succeeded", "early_stopping")
    assert insight.final_weights_epoch == 2
    # restore_best_weights off, or still training: no claim about the final weights
    assert (
        analyse(
            spec({**early, "restore_best_weights": False}), history, "succeeded", "early_stopping"
        ).final_weights_epoch
        is None
    )
    assert analyse(spec(early), history, "running", None).final_weights_epoch is None


def test_no_epochs_no_findings() -> None:
    insight = analyse(spec(), [], "queued", None)
    assert insight.findings == [] and insight.best_epoch is None


# What a finding recommends is conditional on the spec: never what the job already has.
OVERFIT = rows(loss=FALLING, val_loss=[2.0, 1.4, 1.0, 0.8, 0.7, 0.72, 0.75, 0.8, 0.86, 0.9])
RECOMMENDED_EARLY = "EarlyStopping(monitor='val_loss', restore_best_weights=True)"


def test_overfitting_recommends_early_stopping_only_to_a_job_without_it() -> None:
    bare = analyse(spec(), OVERFIT, "succeeded", "completed").findings[0]
    assert RECOMMENDED_EARLY in bare.remedy and "would stop near epoch 6" in bare.remedy
    assert "keep epoch 5's weights" in bare.remedy

    early = {
        "type": "EarlyStopping",
        "monitor": "val_loss",
        "patience": 5,
        "restore_best_weights": True,
    }
    has_it = analyse(spec(early), OVERFIT, "succeeded", "completed").findings[0]
    assert has_it.kind == "overfitting"
    assert "EarlyStopping(" not in has_it.remedy
    assert has_it.remedy.startswith(
        "the job's EarlyStopping (callbacks[0]) keeps the best epoch's weights; a patience "
        "below 5 would stop sooner, nearer epoch 6"
    )


@pytest.mark.parametrize(
    ("early", "expected"),
    [
        (
            {"type": "EarlyStopping", "monitor": "val_loss", "patience": 5},
            "restore_best_weights=True on the job's EarlyStopping (callbacks[1]) would keep "
            "epoch 5's weights",
        ),
        (
            {"type": "EarlyStopping", "monitor": "val_accuracy", "restore_best_weights": True},
            "the job's EarlyStopping (callbacks[1]) monitors 'val_accuracy'; on 'val_loss' it "
            "would stop near epoch 6",
        ),
        (
            {"type": "EarlyStopping", "restore_best_weights": True},
            "the job's EarlyStopping (callbacks[1]) keeps the best epoch's weights;",
        ),
    ],
)
def test_overfitting_speaks_of_the_jobs_own_early_stopping(
    early: dict[str, Any], expected: str
) -> None:
    other = {"type": "TensorBoard"}
    finding = analyse(spec(other, early), OVERFIT, "succeeded", "completed").findings[0]
    assert finding.remedy.startswith(expected), finding.remedy
    assert RECOMMENDED_EARLY not in finding.remedy


def test_augmentation_is_not_recommended_to_an_augmented_job() -> None:
    augmented = {**spec(), "data": {"augmentation": [{"layer": "RandomFlip"}]}}
    remedy = analyse(augmented, OVERFIT, "succeeded", "completed").findings[0].remedy
    assert "stronger augmentation" in remedy and "(data.augmentation)" not in remedy


def test_divergence_recommends_only_what_the_job_lacks() -> None:
    nan = rows(loss=[1.0, 0.8, math.nan])
    bare = analyse(spec(), nan, "failed", "nan_loss").findings[0].remedy
    assert "add TerminateOnNaN" in bare and "clip gradients (" in bare
    armed = {
        "compile": {
            "loss": "sparse_categorical_crossentropy",
            "optimizer": {"class_name": "Adam", "config": {"clipnorm": 1.0}},
        },
        "callbacks": [{"type": "TerminateOnNaN"}],
    }
    remedy = analyse(armed, nan, "failed", "nan_loss").findings[0].remedy
    assert "TerminateOnNaN" not in remedy
    assert remedy == (
        "lower compile.optimizer.learning_rate, or clip gradients harder (clipnorm is 1.0)"
    )

    rising = rows(loss=[1.0, 0.5, 0.4, 0.7, 1.5, 4.0])
    assert "add ReduceLROnPlateau" in analyse(spec(), rising, "running", None).findings[0].remedy
    plateau = {"type": "ReduceLROnPlateau", "monitor": "loss", "patience": 4, "factor": 0.5}
    remedy = analyse(spec(plateau), rising, "running", None).findings[0].remedy
    assert "add ReduceLROnPlateau" not in remedy
    assert "the job's ReduceLROnPlateau (callbacks[0]) act sooner: a patience below 4" in remedy
    # With a schedule as the rate, Keras cannot run ReduceLROnPlateau: not recommended.
    scheduled = spec()
    decay = {"class_name": "ExponentialDecay", "config": {"initial_learning_rate": 0.1}}
    scheduled["compile"]["optimizer"] = {"class_name": "SGD", "config": {"learning_rate": decay}}
    remedy = analyse(scheduled, rising, "running", None).findings[0].remedy
    assert "ReduceLROnPlateau" not in remedy and "ExponentialDecay" in remedy


def test_underfitting_recommends_early_stopping_only_to_a_job_without_it() -> None:
    history = rows(
        loss=[2.0, 1.7, 1.45, 1.25, 1.08, 0.93, 0.8],
        val_loss=[2.1, 1.8, 1.55, 1.35, 1.2, 1.05, 0.95],
    )
    bare = {**spec(), "fit": {"epochs": 7}}
    remedy = analyse(bare, history, "succeeded", "completed").findings[0].remedy
    assert remedy.startswith("raise fit.epochs (now 7), with EarlyStopping")
    early = {"type": "EarlyStopping", "monitor": "val_loss", "patience": 3}
    has_it = {**spec(early), "fit": {"epochs": 7}}
    remedy = analyse(has_it, history, "succeeded", "completed").findings[0].remedy
    assert remedy.startswith("raise fit.epochs (now 7): the job's EarlyStopping stops it")
    assert "with EarlyStopping" not in remedy
