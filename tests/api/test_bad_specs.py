"""A corpus of bad job specs: each is refused with a 4xx naming the field, never a 5xx.

Every case is POSTed to ``/v1/jobs``. A 422 must carry a ``detail`` entry whose ``loc``
is the field's path and whose ``msg`` says what was expected; nothing may be stored.
A case the product wrongly accepts stays here, marked ``xfail(strict=True)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.settings import Settings
from migrations.migrate import upgrade
from tests.factories import digits_spec, keras_sequential

SMALL_INLINE = 50  # max_inline_values of the "small" app
SMALL_BODY = 4096  # max_body_bytes of the "small" app


class Case(NamedTuple):
    id: str
    overrides: dict[str, Any]  # passed to digits_spec(); ignored when raw is set
    loc: list[str | int] | None  # expected loc (None: no loc, e.g. 413)
    msg: str  # a substring of the expected message
    status: int = 422
    app: str = "default"  # "default": the `client` fixture; "small": low caps
    raw: tuple[bytes, str] | None = None  # (body, content type) sent as is
    xfail: str | None = None
    alt: tuple[tuple[list[Any], str], ...] = ()  # other acceptable (loc, msg) pairs


def _json(**overrides: Any) -> tuple[bytes, str]:
    """A JSON body as Python's json writes it, NaN and Infinity included."""
    return json.dumps(digits_spec(**overrides)).encode(), "application/json"


def _cb(**callback: Any) -> dict[str, Any]:
    return {"callbacks": [callback]}


def _ckpt(filepath: str, **more: Any) -> dict[str, Any]:
    return _cb(type="ModelCheckpoint", filepath=filepath, monitor="loss", **more)


def _layer(
    cls: str,
    config: dict[str, Any],
    module: str | None = "keras.layers",
    registered: str | None = None,
) -> dict[str, Any]:
    return {"module": module, "class_name": cls, "config": config, "registered_name": registered}


def _keras(*layers: dict[str, Any], shape: list[int | None] | None = None) -> dict[str, Any]:
    """``model.*`` overrides for a keras_config shaped as ``model.to_json()`` writes it."""
    config = keras_sequential(*layers, shape=shape[1:] if shape else None)
    return {"model.builtin": ..., "model.params": ..., "model.keras_config": config}


FLATTEN = _layer("Flatten", {"name": "f"})
DENSE = _layer("Dense", {"name": "d", "units": 10, "activation": "softmax"})
LAMBDA = _layer(
    "Lambda",
    {
        "name": "l",
        "function": {
            "class_name": "__lambda__",
            "config": {"code": "4wEAAAAA", "defaults": None, "closure": None},
        },
        "output_shape": None,
        "arguments": {},
    },
)
IRIS = {
    "data.train": {"dataset": "builtin:iris", "split": "train"},
    "data.validation": {"dataset": "builtin:iris", "split": "validation"},
}
NO_VAL = {"data.validation": ...}


def _inline(x: list[Any], y: list[Any]) -> dict[str, Any]:
    return {"data.train": {"x": x, "y": y}, **NO_VAL}


B, F, CB = "body", ("body", "fit"), ("body", "callbacks", 0)
KC = ["body", "model", "keras_config"]
LAYER1 = [*KC, "config", "layers", 1]
CW = [*F, "class_weight", "dict[int,constrained-float]"]
SAFE = "expected letters, digits"
NAN, INF, YAML = float("nan"), float("inf"), "application/yaml"

CASES = [
    # --- wrong types and out-of-range numbers (schema) ---
    Case("epochs_string", {"fit.epochs": "ten"}, [*F, "epochs"], "valid integer"),
    Case(
        "augment_non_images",
        {**IRIS, "data.augmentation": [{"layer": "RandomFlip"}]},
        ["body", "data", "augmentation", 0],
        "needs image samples",
    ),
    Case(
        "augment_crop_too_big",
        {"data.augmentation": [{"layer": "RandomCrop", "height": 9, "width": 4}]},
        ["body", "data", "augmentation", 0],
        "expected at most the image size",
    ),
    Case(
        "augment_unknown_layer",
        {"data.augmentation": [{"layer": "Lambda"}]},
        ["body", "data", "augmentation", 0],
        "does not match any of the expected tags",
    ),
    Case(
        "keras_shape_bomb",
        _keras(_layer("Reshape", {"target_shape": [10**9, 64], "name": "r"})),
        ["body", "model", "keras_config", "config", "layers", 1, "config", "target_shape"],
        "expected dimensions from 1",
    ),
    Case("epochs_boolean", {"fit.epochs": True}, [*F, "epochs"], "valid integer"),
    Case("batch_size_list", {"fit.batch_size": [32]}, [*F, "batch_size"], "valid integer"),
    Case("batch_size_zero", {"fit.batch_size": 0}, [*F, "batch_size"], "greater than 0"),
    Case("epochs_negative", {"fit.epochs": -1}, [*F, "epochs"], "greater than 0"),
    Case(
        "steps_per_epoch_zero",
        {"fit.steps_per_epoch": 0},
        [*F, "steps_per_epoch"],
        "greater than 0",
    ),
    Case(
        "validation_steps_zero",
        {"fit.validation_steps": 0},
        [*F, "validation_steps"],
        "greater than 0",
    ),
    Case(
        "validation_split_one",
        {"fit.validation_split": 1.0, **NO_VAL},
        [*F, "validation_split"],
        "less than 1",
    ),
    Case(
        "validation_split_negative",
        {"fit.validation_split": -0.1, **NO_VAL},
        [*F, "validation_split"],
        "greater than or equal to 0",
    ),
    Case("verbose_3", {"fit.verbose": 3}, [*F, "verbose"], "Input should be 'auto', 0, 1 or 2"),
    Case(
        "max_runtime_zero", {"max_runtime_seconds": 0}, [B, "max_runtime_seconds"], "greater than 0"
    ),
    Case(
        "max_runtime_over_cap",
        {"max_runtime_seconds": 10**9},
        [B, "max_runtime_seconds"],
        "expected at most 604800",
    ),
    Case("epochs_over_cap", {"fit.epochs": 10_001}, [*F, "epochs"], "expected at most 10000"),
    Case("seed_negative", {"seed": -1}, [B, "seed"], "greater than or equal to 0"),
    Case("queue_with_spaces", {"queue": "my queue"}, [B, "queue"], "should match pattern"),
    Case(
        "class_weight_negative",
        {"fit.class_weight": {"0": -1.0}},
        [*CW, "0"],
        "greater than or equal to 0",
    ),
    Case(
        "class_weight_non_int_key",
        {"fit.class_weight": {"cat": 1.0}},
        [*CW, "cat", "[key]"],
        "valid integer",
    ),
    # --- unknown keys, missing keys, wrong body ---
    Case("unknown_top_level_key", {"epochs": 3}, [B, "epochs"], "Extra inputs are not permitted"),
    Case(
        "unknown_fit_key",
        {"fit.learning_rate": 0.1},
        [*F, "learning_rate"],
        "Extra inputs are not permitted",
    ),
    Case("unknown_callback_type", _cb(type="Foo"), list(CB), "expected tags: 'EarlyStopping'"),
    Case(
        "unknown_callback_arg",
        _cb(type="EarlyStopping", monitor="loss", lr=1),
        [*CB, "EarlyStopping", "lr"],
        "Extra inputs are not permitted",
    ),
    Case("missing_loss", {"compile.loss": ...}, [B, "compile", "loss"], "Field required"),
    Case("missing_model", {"model": ...}, [B, "model"], "Field required"),
    Case("body_is_a_list", {}, [B], "valid dictionary", raw=(b"[]", "application/json")),
    Case("malformed_json", {}, [B, 1], "JSON decode error", raw=(b"{bad", "application/json")),
    Case("invalid_yaml", {}, [B], "not valid YAML", raw=(b"fit: [1\n", YAML)),
    Case("yaml_scalar", {}, [B], "valid dictionary", raw=(b"hello\n", YAML)),
    Case(
        "oversize_body",
        {},
        None,
        "over the limit of 4096 bytes",
        status=413,
        app="small",
        raw=(b'{"name": "' + b"x" * 2 * SMALL_BODY + b'"}', "application/json"),
    ),
    # --- fit semantics ---
    Case(
        "validation_freq_beyond_epochs",
        {"fit.validation_freq": 5},
        [*F, "validation_freq"],
        "beyond epochs=3",
    ),
    Case(
        "validation_freq_list_beyond",
        {"fit.validation_freq": [1, 4]},
        [*F, "validation_freq", 1],
        "expected 1..3",
    ),
    Case(
        "validation_freq_empty_list",
        {"fit.validation_freq": []},
        [*F, "validation_freq"],
        "non-empty list",
    ),
    Case(
        "initial_epoch_ge_epochs",
        {"fit.initial_epoch": 3},
        [*F, "initial_epoch"],
        "expected initial_epoch < epochs",
    ),
    Case(
        "validation_data_and_split",
        {"fit.validation_split": 0.2},
        [*F, "validation_split"],
        "not both",
    ),
    Case(
        "class_weight_not_a_class",
        {"fit.class_weight": {"12": 1.0}},
        [*F, "class_weight", 12],
        "class index in 0..9",
    ),
    # --- callbacks ---
    Case(
        "monitor_uncompiled_metric",
        _cb(type="EarlyStopping", monitor="val_f1"),
        [*CB, "monitor"],
        "no compiled metric produces",
    ),
    Case(
        "monitor_val_loss_no_validation",
        {**_cb(type="EarlyStopping"), **NO_VAL},
        [*CB, "monitor"],
        "need validation data",
    ),
    Case(
        "reduce_lr_monitor_typo",
        _cb(type="ReduceLROnPlateau", monitor="val_acc"),
        [*CB, "monitor"],
        "expected one of",
    ),
    Case(
        "ckpt_val_placeholder_no_validation",
        {**_ckpt("e{epoch:02d}-{val_loss:.3f}.keras"), **NO_VAL},
        [*CB, "filepath"],
        "{val_loss} names nothing Keras logs",
    ),
    Case("ckpt_parent_dir", _ckpt("../x.keras"), [*CB, "filepath"], SAFE),
    Case("ckpt_dotdot_name", _ckpt("..x.keras"), [*CB, "filepath"], "no '..'"),
    Case("ckpt_absolute_path", _ckpt("/tmp/x.keras"), [*CB, "filepath"], SAFE),
    Case(
        "ckpt_attribute_placeholder",
        _ckpt("{epoch.__class__}.keras"),
        [*CB, "filepath"],
        "is not a plain name",
    ),
    Case(
        "ckpt_huge_format_width",
        _ckpt("{epoch:099999d}.keras"),
        [*CB, "filepath"],
        "not a small numeric format",
    ),
    Case(
        "ckpt_wrong_suffix",
        _ckpt("model-{epoch}.hdf5"),
        [*CB, "filepath"],
        "expected a name ending in .keras or .h5",
    ),
    Case(
        "ckpt_weights_only_suffix",
        _ckpt("w{epoch}.keras", save_weights_only=True),
        [*CB, "filepath"],
        "ending in .weights.h5",
    ),
    Case("ckpt_hf_url", _ckpt("hf://x.keras"), [*CB, "filepath"], SAFE),
    Case("csvlogger_path", _cb(type="CSVLogger", filename="../log.csv"), [*CB, "filename"], SAFE),
    Case(
        "tensorboard_twice",
        {"callbacks": [{"type": "TensorBoard"}, {"type": "TensorBoard"}]},
        ["body", "callbacks", 1],
        "appears more than once",
    ),
    # --- model ---
    Case(
        "unknown_architecture",
        {"model.builtin": "resnet"},
        [B, "model", "builtin"],
        "unknown architecture 'resnet'",
    ),
    Case(
        "hidden_units_zero",
        {"model.params": {"hidden_units": [0]}},
        [B, "model", "params", "hidden_units", 0],
        "greater than 0",
    ),
    Case(
        "unknown_architecture_param",
        {"model.params": {"layers": 3}},
        [B, "model", "params", "layers"],
        "Extra inputs are not permitted",
    ),
    Case(
        "cnn_on_iris",
        {"model.builtin": "cnn", "model.params": {}, **IRIS},
        [B, "model", "builtin"],
        "needs image-shaped samples",
    ),
    Case(
        "builtin_and_keras_config",
        {"model.keras_config": _keras(FLATTEN, DENSE)["model.keras_config"]},
        [B, "model"],
        "give exactly one of 'builtin'",
    ),
    Case("keras_config_lambda", _keras(LAMBDA), LAYER1, "Lambda and custom objects are refused"),
    Case(
        "keras_config_registered_name",
        _keras(_layer("Dense", {"name": "d", "units": 10}, registered="my_pkg>Dense")),
        [*LAYER1, "registered_name"],
        "expected null or 'Dense'",
    ),
    Case(
        "keras_config_custom_class",
        _keras(_layer("MyLayer", {"name": "m"}, module=None, registered="my_pkg>MyLayer")),
        LAYER1,
        "not one of Keras' own layers",
    ),
    Case(
        "keras_config_unknown_activation",
        _keras(FLATTEN, _layer("Dense", {"name": "d", "units": 10, "activation": "my_act"})),
        [*KC, "config", "layers", 2, "config", "activation"],
        "received activation 'my_act'",
    ),
    Case(
        "keras_config_not_a_model",
        {**_keras(), "model.keras_config": {"class_name": "Dense"}},
        [*KC, "class_name"],
        "expected a Sequential or Functional model config",
    ),
    Case(
        "keras_config_input_mismatch",
        _keras(FLATTEN, DENSE, shape=[None, 4]),
        [*KC, "config", "layers", 0, "config", "batch_shape"],
        "input 'in': the model's input shape is [4], but the training samples have shape [8, 8, 1]",
    ),
    # --- compile ---
    Case(
        "unknown_optimizer",
        {"compile.optimizer": "adamx"},
        [B, "compile", "optimizer"],
        "unknown optimizer 'adamx'",
    ),
    Case(
        "unknown_optimizer_arg",
        {"compile.optimizer": {"class_name": "Adam", "config": {"lr": 0.1}}},
        [B, "compile", "optimizer", "config", "lr"],
        "unknown optimizer argument 'lr'",
    ),
    Case(
        "unknown_loss",
        {"compile.loss": "cross_entropy"},
        [B, "compile", "loss"],
        "unknown loss 'cross_entropy'",
    ),
    Case(
        "categorical_loss_on_class_indices",
        {**_keras(FLATTEN, DENSE), "compile.loss": "categorical_crossentropy"},
        [B, "compile", "loss"],
        "needs one-hot labels, but the training labels are class indices",
    ),
    Case(
        "early_stopping_verbose_true",
        _cb(type="EarlyStopping", verbose=True),
        [*CB, "EarlyStopping", "verbose"],
        "received verbose=True; expected a count",
    ),
    Case(
        "checkpoint_verbose_false",
        _ckpt("m.keras", verbose=False),
        [*CB, "ModelCheckpoint", "verbose"],
        "not true or false",
    ),
    Case(
        "unknown_metric",
        {"compile.metrics": ["f1"]},
        [B, "compile", "metrics", 0],
        "unknown metric 'f1'",
    ),
    Case(
        "duplicate_metric",
        {"compile.metrics": ["accuracy", "accuracy"]},
        [B, "compile", "metrics"],
        "must appear once",
    ),
    Case(
        "sparse_loss_real_labels",
        _inline([[0.1], [0.2]], [0.5, 1.5]),
        [B, "compile", "loss"],
        "needs integer class labels",
    ),
    # --- data ---
    Case(
        "unknown_dataset",
        {"data.train.dataset": "builtin:mnist"},
        [B, "data", "train", "dataset"],
        "unknown dataset 'builtin:mnist'",
    ),
    Case(
        "take_larger_than_split",
        {"data.train.take": 5000},
        [B, "data", "train", "take"],
        "the data has only 1257 samples",
    ),
    Case(
        "inline_length_mismatch",
        _inline([[1, 2], [3, 4], [5, 6]], [0, 1]),
        [B, "data", "train", "y"],
        "received 2 labels for 3 samples",
    ),
    Case(
        "inline_ragged_x",
        _inline([[1, 2], [3]], [0, 1]),
        [B, "data", "train", "x"],
        "expected a rectangular nested list",
    ),
    Case(
        "inline_strings",
        _inline([["a", "b"]], [0]),
        [B, "data", "train", "x"],
        "expected a rectangular nested list",
    ),
    Case(
        "inline_null",
        _inline([[1, None]], [0]),
        [B, "data", "train", "x"],
        "expected finite numbers",
    ),
    Case(
        "inline_too_deep",
        _inline([[[[[[[1]]]]]]], [0]),
        [B, "data", "train", "x"],
        "nested deeper than 5 levels",
    ),
    Case(
        "inline_x_without_y",
        {"data.train": {"x": [[1]]}, **NO_VAL},
        [B, "data", "train"],
        "needs both 'x' and 'y'",
    ),
    Case(
        "dataset_and_inline",
        {"data.train.x": [[1]], "data.train.y": [0]},
        [B, "data", "train"],
        "give either 'dataset'",
    ),
    Case(
        "inline_over_cap",
        _inline([[0.0] * 4] * 30, [0] * 30),
        [B, "data", "train", "x"],
        f"more than {SMALL_INLINE} numbers",
        app="small",
    ),
    Case("inline_huge_integer", _inline([[10**400]], [0]), [B, "data", "train", "x"], "numbers"),
    # --- NaN / Infinity (Python's json writes and reads them) ---
    Case(
        "nan_min_delta",
        {},
        [*CB, "EarlyStopping", "min_delta"],
        "finite",
        raw=_json(callbacks=[{"type": "EarlyStopping", "min_delta": NAN}]),
    ),
    Case(
        "infinite_class_weight",
        {},
        [*CW, "0"],
        "finite",
        raw=_json(**{"fit.class_weight": {"0": INF}}),
    ),
    Case(
        "nan_learning_rate",
        {},
        [B, "compile", "optimizer", "config", "learning_rate"],
        "finite",
        raw=_json(
            **{"compile.optimizer": {"class_name": "Adam", "config": {"learning_rate": NAN}}}
        ),
        alt=(([B, "compile", "optimizer", "ObjectSpec", "config", "learning_rate"], "finite"),),
    ),
    # --- YAML values JSON cannot hold ---
    Case(
        "yaml_date_value",
        {},
        [B],
        "YAML",
        raw=(b"fit: {epochs: 2020-01-01}\n", YAML),
        alt=(([*F, "epochs"], "valid integer"),),
    ),
    Case(
        "yaml_binary_value",
        {},
        [B],
        "YAML",
        raw=(b"fit: {epochs: !!binary aGk=}\n", YAML),
        alt=(([*F, "epochs"], "valid integer"),),
    ),
    Case(
        "validation_shape_mismatch",
        {"data.validation": {"dataset": "builtin:iris"}},
        [B, "data", "validation"],
        "expected the training data's shape [8, 8, 1]",
    ),
]

PARAMS = [
    pytest.param(
        c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
    )
    for c in CASES
]


@pytest.fixture
def small_client(tmp_path: Path) -> Iterator[TestClient]:
    """An app with low caps on inline values and body size."""
    s = Settings(
        data_dir=tmp_path / "small",
        database_url=f"sqlite:///{tmp_path / 'small.db'}",
        max_inline_values=SMALL_INLINE,
        max_body_bytes=SMALL_BODY,
    )
    upgrade(s.resolved_database_url)
    with TestClient(create_app(s)) as c:
        yield c


def _post(client: TestClient, case: Case) -> Any:
    if case.raw is not None:
        body, content_type = case.raw
        return client.post("/v1/jobs", content=body, headers={"Content-Type": content_type})
    return client.post("/v1/jobs", json=digits_spec(**case.overrides))


def _check_refused(client: TestClient, case: Case) -> None:
    resp = _post(client, case)
    assert resp.status_code < 500, f"{case.id}: server error {resp.status_code}: {resp.text}"
    assert resp.status_code == case.status, f"{case.id}: {resp.status_code} {resp.text}"
    detail = resp.json()["detail"]
    if case.loc is None:
        assert case.msg in str(detail), detail
        return
    assert isinstance(detail, list) and detail, detail
    assert all({"loc", "msg", "type"} <= set(e) for e in detail), detail
    expected = [(case.loc, case.msg), *case.alt]
    assert any(e["loc"] == loc and msg in e["msg"] for e in detail for loc, msg in expected), (
        f"{case.id}: no entry with {expected}: {detail}"
    )


@pytest.mark.parametrize("case", PARAMS)
def test_bad_spec_is_refused(case: Case, request: pytest.FixtureRequest) -> None:
    client = request.getfixturevalue("client" if case.app == "default" else "small_client")
    _check_refused(client, case)
    assert client.get("/v1/jobs").json()["items"] == []


def test_corpus_is_large_and_ids_unique() -> None:
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


def test_service_keeps_serving_after_the_corpus(
    client: TestClient, small_client: TestClient
) -> None:
    """Every bad request in turn on one app; then it is healthy, empty, and accepts a job."""
    for case in CASES:
        if not case.xfail:
            _check_refused(client if case.app == "default" else small_client, case)
    for c in (client, small_client):
        assert c.get("/healthz").status_code == 200
        assert c.get("/v1/jobs").json()["items"] == []
    resp = client.post("/v1/jobs", json=digits_spec())
    assert resp.status_code == 201, resp.text
    assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [resp.json()["id"]]
