"""Job specs from a user who reads the checks and aims around them.

Each is POSTed to the real app on a real database. Those that would build a model
larger than the limits, or name what is no Keras object, or ask for absurd loops,
answer 422 with the field's path and the limit or the names expected; nothing is
queued. The valid specs beside them (integer targets for a regression, a Functional
graph) are accepted, with the size fitq works out for them shown to be exact.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from api.main import create_app
from checks.validation import check_spec
from core.errors import SpecError
from core.settings import Settings
from migrations.migrate import upgrade
from models.spec import JobSpec
from tests.factories import digits_spec, keras_layer, keras_sequential

KC = ["body", "model", "keras_config"]


def layer(cls: str, **config: Any) -> dict[str, Any]:
    return keras_layer(cls, **config)


def sequential(*layers: dict[str, Any], shape: list[int] | None = None) -> dict[str, Any]:
    """``model.*`` overrides for a Sequential keras_config on digits (8x8x1 samples)."""
    config = keras_sequential(*layers, shape=shape)
    return {"model.builtin": ..., "model.params": ..., "model.keras_config": config}


def tensor(name: str, node: int = 0) -> dict[str, Any]:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, 4], "dtype": "float32", "keras_history": [name, node, 0]},
    }


def called(cls: str, name: str, args: Any, **config: Any) -> dict[str, Any]:
    node = {"args": [args], "kwargs": {}}
    return {**layer(cls, name=name, **config), "name": name, "inbound_nodes": [node]}


def functional(*layers: dict[str, Any], output: str) -> dict[str, Any]:
    """``model.*`` overrides for a Functional keras_config on digits."""
    source = {
        **layer("InputLayer", batch_shape=[None, 8, 8, 1], name="in"),
        "name": "in",
        "inbound_nodes": [],
    }
    config = {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "registered_name": None,
        "config": {
            "name": "f",
            "trainable": True,
            "layers": [source, *layers],
            "input_layers": [["in", 0, 0]],
            "output_layers": [[output, 0, 0]],
        },
    }
    return {"model.builtin": ..., "model.params": ..., "model.keras_config": config}


FLAT = layer("Flatten", name="flat")
OUT = layer("Dense", name="out", units=10, activation="softmax")
TO_SEQUENCE = layer("Reshape", name="seq", target_shape=[8, 8])


def regression(y: list[float], **overrides: Any) -> dict[str, Any]:
    """An MLP regression on inline data, one input feature."""
    return digits_spec(
        **{
            "data.train": {"x": [[float(i % 7)] for i in range(len(y))], "y": y},
            "data.validation": ...,
            "compile": {"optimizer": "adam", "loss": "mse"},
            "model.params": {"hidden_units": [64]},
            **overrides,
        }
    )


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def make(**limits: Any) -> TestClient:
        n = len(clients)
        s = Settings(
            data_dir=tmp_path / f"data{n}",
            database_url=f"sqlite:///{tmp_path / f'api{n}.db'}",
            **limits,
        )
        upgrade(s.resolved_database_url)
        client = TestClient(create_app(s))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Any) -> TestClient:
    result: TestClient = make_client()
    return result


def refused(client: TestClient, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The 422's detail; nothing was queued."""
    before = client.get("/v1/jobs").json()["items"]
    resp = client.post("/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.text[:2000]
    assert client.get("/v1/jobs").json()["items"] == before
    detail: list[dict[str, Any]] = resp.json()["detail"]
    return detail


def has(detail: list[dict[str, Any]], loc: list[Any], *parts: str) -> bool:
    return any(e["loc"] == loc and all(p in e["msg"] for p in parts) for e in detail)


# --- weights and activations past the limits ----------------------------------------


def test_a_bidirectional_lstm_of_537m_weights_is_refused(client: TestClient) -> None:
    spec = digits_spec(
        **sequential(
            TO_SEQUENCE,
            layer("Bidirectional", name="bi", layer=layer("LSTM", name="l", units=8192)),
            OUT,
        )
    )
    detail = refused(client, spec)
    weights = 2 * 4 * (8192 * (8 + 8192) + 8192) + (2 * 8192 * 10 + 10)  # both directions, out
    assert has(detail, ["body", "model"], f"{weights:,} weights", "FITQ_MAX_PARAMS"), detail


def test_repeat_vector_then_dense_is_refused_for_its_weights(client: TestClient) -> None:
    spec = digits_spec(
        **sequential(
            FLAT,
            layer("RepeatVector", name="r", n=2_500_000),
            layer("Flatten", name="f2"),
            layer("Dense", name="d", units=1000),
            OUT,
        )
    )
    detail = refused(client, spec)
    assert has(detail, ["body", "model"], "FITQ_MAX_PARAMS"), detail
    assert has(detail, ["body", "model"], "FITQ_MAX_ACTIVATION_BYTES"), detail


def test_a_huge_intermediate_shape_without_weights_is_refused_for_its_memory(
    client: TestClient,
) -> None:
    spec = digits_spec(
        **sequential(
            FLAT,
            layer("RepeatVector", name="r", n=2_500_000),
            layer("GlobalAveragePooling1D", name="g"),
            OUT,
        )
    )
    detail = refused(client, spec)
    numbers = 64 + 64 + 2_500_000 * 64 + 64 + 10  # input, Flatten, RepeatVector, pooling, out
    bytes_ = numbers * 32 * 4  # the default batch of 32, 4 bytes a number
    assert has(detail, ["body", "model"], f"{bytes_:,} bytes", "FITQ_MAX_ACTIVATION_BYTES")
    assert not has(detail, ["body", "model"], "FITQ_MAX_PARAMS"), detail


@pytest.mark.parametrize(
    "grow",
    [
        layer("UpSampling2D", name="u", size=[4096, 4096]),
        layer("ZeroPadding2D", name="z", padding=60000),
    ],
    ids=["UpSampling2D", "ZeroPadding2D"],
)
def test_layers_that_grow_the_sample_count_against_the_memory_limit(
    client: TestClient, grow: dict[str, Any]
) -> None:
    spec = digits_spec(**sequential(grow, FLAT, OUT))
    assert has(refused(client, spec), ["body", "model"], "FITQ_MAX_ACTIVATION_BYTES")


def test_the_memory_limit_is_a_setting_and_counts_the_batch(make_client: Any) -> None:
    small = make_client(max_activation_bytes=1_000_000)
    spec = digits_spec(**sequential(FLAT, layer("Dense", name="d", units=2048), OUT))
    # (64 + 64 + 2048 + 10) numbers a sample x 4 bytes: 8,744 bytes; 114 samples fit
    assert small.post("/v1/jobs", json={**spec, "fit": {"batch_size": 114}}).status_code == 201
    detail = refused(small, {**spec, "fit": {"batch_size": 115}})
    assert has(detail, ["body", "model"], f"{8744 * 115:,} bytes", "1,000,000"), detail


def test_sizes_past_any_memory_answer_422_not_500(client: TestClient) -> None:
    """Sizes multiply along a stack; fitq's own arithmetic and messages stay small."""
    huge = [FLAT]
    for i in range(16):
        huge += [layer("RepeatVector", name=f"r{i}", n=2**31 - 1), layer("Flatten", name=f"f{i}")]
    detail = refused(client, digits_spec(**sequential(*huge, OUT)))
    assert has(detail, [*KC, "config", "layers", 4], "RepeatVector", "more than"), detail
    big = layer("RepeatVector", name="r", n=10**300)
    detail = refused(client, digits_spec(**sequential(FLAT, big, OUT)))
    assert has(detail, [*KC, "config", "layers", 2, "config", "n"], "2147483647"), detail
    permute = layer("Permute", name="p", dims=[1, "a", None])
    detail = refused(client, digits_spec(**sequential(permute, FLAT, OUT)))
    assert has(detail, [*KC, "config", "layers", 1, "config", "dims"], "permutation"), detail


def test_build_config_cannot_build_weights_for_another_shape(client: TestClient) -> None:
    dense = {**layer("Dense", name="d", units=8192), "build_config": {"input_shape": [None, 65536]}}
    detail = refused(client, digits_spec(**sequential(FLAT, dense, OUT)))
    loc = [*KC, "config", "layers", 2, "build_config", "input_shape"]
    assert has(detail, loc, "[None, 64]"), detail


def test_the_models_build_config_cannot_build_it_for_another_shape(client: TestClient) -> None:
    model = sequential(FLAT, layer("Dense", name="d", units=8192), OUT)
    config = model["model.keras_config"]
    config["config"]["layers"].pop(0)  # no InputLayer: Keras builds from build_config
    config["build_config"] = {"input_shape": [None, 65536]}
    detail = refused(client, digits_spec(**model))
    assert has(detail, [*KC, "build_config", "input_shape"], "[None, 8, 8, 1]"), detail


def test_an_input_shape_declared_any_way_must_be_the_datas(client: TestClient) -> None:
    by_shape = sequential(FLAT, OUT)
    by_shape["model.keras_config"]["config"]["layers"][0]["config"] = {"shape": [65536, 8192]}
    detail = refused(client, digits_spec(**by_shape))
    loc = [*KC, "config", "layers", 0, "config", "shape"]
    assert has(detail, loc, "input 'input_layer'", "input shape is [65536, 8192]", "[8, 8, 1]"), (
        detail
    )
    late = sequential(FLAT, layer("Dense", name="d", units=4, input_shape=[65536]), OUT)
    detail = refused(client, digits_spec(**late))
    assert has(detail, [*KC, "config", "layers", 2, "config", "input_shape"], "only"), detail


def test_a_model_inside_a_model_is_sized_on_what_it_is_called_on(make_client: Any) -> None:
    inner = {
        "module": "keras",
        "class_name": "Sequential",
        "registered_name": None,
        "config": {"name": "inner", "layers": [layer("Dense", name="d", units=8192)]},
    }
    spec = digits_spec(**sequential(FLAT, inner, OUT))
    weights = (64 * 8192 + 8192) + (8192 * 10 + 10)
    assert make_client(max_params=weights).post("/v1/jobs", json=spec).status_code == 201
    detail = refused(make_client(max_params=weights - 1), spec)
    assert has(detail, ["body", "model"], f"about {weights:,} weights"), detail
    # a shape the inner model declares must be what it is called on
    declared = layer("InputLayer", name="i", batch_shape=[None, 65536])
    inner["config"]["layers"].insert(0, declared)
    detail = refused(make_client(), digits_spec(**sequential(FLAT, inner, OUT)))
    loc = [*KC, "config", "layers", 2, "config", "layers", 0, "config", "batch_shape"]
    assert has(detail, loc, "layer 'inner'", "[65536]", "called on have shape [64]"), detail


def test_nothing_off_the_allowlist_passes_inside_a_model_inside_a_model(
    client: TestClient,
) -> None:
    lam = {
        **layer("Lambda", name="l", function={"class_name": "__lambda__", "config": {}}),
        "name": "l",
        "inbound_nodes": [],
    }
    inner = functional(called("Flatten", "flat", tensor("in")), lam, output="flat")
    nested = {**inner["model.keras_config"], "name": "inner", "inbound_nodes": []}
    nested["inbound_nodes"] = [{"args": [tensor("in")], "kwargs": {}}]
    outer = functional(nested, called("Dense", "out", tensor("inner"), units=10), output="out")
    detail = refused(client, digits_spec(**outer))
    loc = [*KC, "config", "layers", 1, "config", "layers", 2]
    assert has(detail, loc, "Lambda and custom objects are refused"), detail
    for module, registered in (
        ("evil.models", None),
        ("keras.src.models.functional", "my_pkg>Functional"),
    ):
        foreign = {**nested, "module": module, "registered_name": registered}
        foreign["config"] = {**nested["config"], "layers": nested["config"]["layers"][:2]}
        spec = functional(foreign, called("Dense", "out", tensor("inner"), units=10), output="out")
        detail = refused(client, digits_spec(**spec))
        assert any(e["loc"][:6] == [*KC, "config", "layers", 1] for e in detail), detail
    # model.get_config(), without the wrapper, passes the same allowlist
    bare = outer["model.keras_config"]["config"]
    detail = refused(client, digits_spec(**{**outer, "model.keras_config": bare}))
    assert has(detail, [*KC, "layers", 1, "config", "layers", 2], "Lambda"), detail


def test_the_keras_io_mnist_convnet_on_8x8_images_is_refused_at_its_last_pooling(
    client: TestClient,
) -> None:
    """keras-io's "Simple MNIST convnet", its input edited from 28x28 to the digits' 8x8."""
    convnet = sequential(
        layer("Conv2D", name="conv2d", filters=32, kernel_size=[3, 3], activation="relu"),
        layer("MaxPooling2D", name="max_pooling2d", pool_size=[2, 2]),
        layer("Conv2D", name="conv2d_1", filters=64, kernel_size=[3, 3], activation="relu"),
        layer("MaxPooling2D", name="max_pooling2d_1", pool_size=[2, 2]),
        layer("Flatten", name="flatten"),
        layer("Dropout", name="dropout", rate=0.5),
        layer("Dense", name="dense", units=10, activation="softmax"),
    )
    detail = refused(client, digits_spec(**convnet))
    loc = [*KC, "config", "layers", 4, "config"]
    assert has(detail, loc, "layer 'max_pooling2d_1'", "spatial size [1, 1]"), detail


def test_a_model_of_two_inputs_needs_data_for_each(client: TestClient) -> None:
    second = {**layer("InputLayer", name="meta", batch_shape=[None, 3]), "name": "meta"}
    spec = functional(
        {**second, "inbound_nodes": []},
        called("Flatten", "flat", tensor("in")),
        called("Concatenate", "cat", [tensor("flat"), tensor("meta")]),
        called("Dense", "out", tensor("cat"), units=10),
        output="out",
    )
    spec["model.keras_config"]["config"]["input_layers"] = [["in", 0, 0], ["meta", 0, 0]]
    detail = refused(client, digits_spec(**spec))
    loc = ["body", "data", "train", "dataset"]
    assert has(detail, loc, "2 inputs ['in', 'meta']", "by input name"), detail


def test_a_functional_layer_that_is_never_called_is_refused(client: TestClient) -> None:
    orphan = {**layer("Dense", name="big", units=8192), "name": "big", "inbound_nodes": []}
    spec = digits_spec(
        **functional(
            called("Flatten", "flat", tensor("in")),
            orphan,
            called("Dense", "out", tensor("flat"), units=10),
            output="out",
        )
    )
    detail = refused(client, spec)
    assert has(detail, [*KC, "config", "layers", 2, "inbound_nodes"], "never called"), detail


def test_a_functional_graph_is_sized_call_by_call(make_client: Any) -> None:
    spec = digits_spec(
        **functional(
            called("Flatten", "flat", tensor("in")),
            called("Dense", "a", tensor("flat"), units=16),
            called("Dense", "b", tensor("flat"), units=16),
            called("Add", "sum", [tensor("a"), tensor("b")]),
            called("Dense", "out", tensor("sum"), units=10, activation="softmax"),
            output="out",
        )
    )
    # 2 x (64 x 16 + 16) + 16 x 10 + 10 = 2,250 weights
    assert make_client(max_params=2250).post("/v1/jobs", json=spec).status_code == 201
    detail = refused(make_client(max_params=2249), spec)
    assert has(detail, ["body", "model"], "about 2,250 weights"), detail
    looped = spec["model"]["keras_config"]["config"]["layers"]
    looped[2]["inbound_nodes"][0]["args"] = [tensor("out")]  # a -> sum -> out -> a
    detail = refused(make_client(), spec)
    assert has(detail, [*KC, "config", "layers", 2, "inbound_nodes"], "a loop"), detail


# --- labels are classes only when the loss says so ---------------------------------


def test_integer_regression_targets_are_not_classes(make_client: Any) -> None:
    y = [float(i * 15_873) for i in range(64)]  # integers up to 1,000,000
    # An MLP of 64 hidden units with one linear output: (1 x 64 + 64) + (64 x 1 + 1)
    assert make_client(max_params=193).post("/v1/jobs", json=regression(y)).status_code == 201
    detail = refused(make_client(max_params=192), regression(y))
    assert has(detail, ["body", "model"], "about 193 weights"), detail


def test_integer_regression_targets_get_no_class_advice(client: TestClient) -> None:
    resp = client.post("/v1/jobs", json=regression([0.0] * 30 + [1.0] * 3 + [2.0] * 3))
    assert resp.status_code == 201, resp.text
    assert not any("imbalanced" in w for w in resp.json()["warnings"])


def test_sparse_labels_still_size_the_output(make_client: Any) -> None:
    y = [float(i % 5) for i in range(40)]
    spec = regression(y, **{"compile.loss": "sparse_categorical_crossentropy"})
    # (1 x 64 + 64) + (64 x 5 + 5)
    assert make_client(max_params=453).post("/v1/jobs", json=spec).status_code == 201
    assert has(refused(make_client(max_params=452), spec), ["body", "model"], "about 453")


def test_validation_labels_size_the_output_as_the_worker_does(make_client: Any) -> None:
    """The worker's output layer has a unit for the largest label of any split."""
    spec = regression(
        [float(i % 5) for i in range(40)],
        **{
            "compile.loss": "sparse_categorical_crossentropy",
            "data.validation": {"x": [[1.0], [2.0]], "y": [0, 8000]},
        },
    )
    weights = (1 * 64 + 64) + (64 * 8001 + 8001)
    assert make_client(max_params=weights).post("/v1/jobs", json=spec).status_code == 201
    assert has(refused(make_client(max_params=weights - 1), spec), ["body", "model"], "about")
    spec["data"]["validation"]["y"] = [0, 1_000_000]
    detail = refused(make_client(), spec)
    assert has(detail, ["body", "compile", "loss"], "the validation labels are not"), detail


def test_huge_or_integral_float_labels_never_break_the_check(client: TestClient) -> None:
    for y in ([1e300, 2.0], [float(2**63), 0.0], [1e15, 3.0]):
        resp = client.post("/v1/jobs", json=regression(y))
        assert resp.status_code == 201, (y, resp.text)
    spec = regression([1e15, 3.0], **{"compile.loss": "sparse_categorical_crossentropy"})
    assert has(refused(client, spec), ["body", "compile", "loss"], "needs integer class labels")


def test_class_weight_needs_a_loss_on_classes(client: TestClient) -> None:
    spec = regression([float(i % 2) for i in range(40)], **{"fit.class_weight": {"0": 2.0}})
    detail = refused(client, spec)
    assert has(detail, ["body", "fit", "class_weight"], "'mse'", "sparse_categorical"), detail


# --- strings that name no Keras object ---------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("recurrent_activation", "eval", "'hard_sigmoid'"),
        ("kernel_initializer", "os.system", "'glorot_uniform'"),
        ("recurrent_initializer", "__import__", "'orthogonal'"),
        ("kernel_regularizer", "builtins.exec", "'l2'"),
        ("bias_constraint", "subprocess.call", "'non_neg'"),
        ("dtype", "os.system", "'float32'"),
        ("activation", "eval", "'tanh'"),
    ],
)
def test_a_string_that_names_no_keras_object_is_refused(
    client: TestClient, key: str, value: str, expected: str
) -> None:
    lstm = layer("LSTM", name="l", units=4, **{key: value})
    detail = refused(client, digits_spec(**sequential(TO_SEQUENCE, lstm, OUT)))
    loc = [*KC, "config", "layers", 2, "config", key]
    assert has(detail, loc, repr(value), expected), detail


def test_an_object_of_the_wrong_kind_is_refused(client: TestClient) -> None:
    dense = layer("Dense", name="d", units=4, kernel_initializer=layer("Dense", units=4))
    detail = refused(client, digits_spec(**sequential(FLAT, dense, OUT)))
    loc = [*KC, "config", "layers", 2, "config", "kernel_initializer"]
    assert has(detail, loc, "keras.initializers", "GlorotUniform"), detail
    policy = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "int8_from_x"}}
    out = {**OUT, "config": {**OUT["config"], "dtype": policy}}
    detail = refused(client, digits_spec(**sequential(FLAT, out)))
    loc = [*KC, "config", "layers", 2, "config", "dtype", "config", "name"]
    assert has(detail, loc, "'int8_from_x'", "'float32'"), detail


@pytest.mark.parametrize(
    ("field", "config", "key"),
    [
        ("optimizer", {"class_name": "Adam", "config": {"learning_rate": "eval"}}, "learning_rate"),
        ("optimizer", {"class_name": "SGD", "config": {"nesterov": "yes"}}, "nesterov"),
        ("loss", {"class_name": "Huber", "config": {"delta": [1, 2]}}, "delta"),
    ],
)
def test_compile_arguments_hold_what_keras_expects(
    client: TestClient, field: str, config: dict[str, Any], key: str
) -> None:
    spec = regression([1.0, 2.0, 3.0], **{f"compile.{field}": config})
    detail = refused(client, spec)
    assert has(detail, ["body", "compile", field, "config", key], "received", "expected"), detail


# --- loops and threads -------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "setting"),
    [
        ("steps_per_epoch", 10**15, "FITQ_MAX_STEPS"),
        ("validation_steps", 10**15, "FITQ_MAX_STEPS"),
        ("workers", 10**6, "FITQ_MAX_FIT_WORKERS"),
    ],
)
def test_caps_on_steps_and_workers(
    client: TestClient, field: str, value: int, setting: str
) -> None:
    detail = refused(client, digits_spec(**{f"fit.{field}": value}))
    assert has(detail, ["body", "fit", field], str(value), setting), detail


def test_steps_and_workers_under_the_caps_pass(client: TestClient) -> None:
    spec = digits_spec(**{"fit.steps_per_epoch": 1_000_000, "fit.workers": 32})
    assert client.post("/v1/jobs", json=spec).status_code == 201


# --- any value anywhere in a config: a 422 or a pass, never an exception ------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
INIT = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}}
POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}}
BASES = [
    sequential(
        layer(
            "Conv2D", name="c", filters=4, kernel_size=3, padding="same", kernel_initializer=INIT
        ),
        layer("MaxPooling2D", name="p", pool_size=2, dtype=POLICY),
        layer("Reshape", name="r", target_shape=[4, 16]),
        layer("Bidirectional", name="b", layer=layer("LSTM", units=3, return_sequences=True)),
        layer("TimeDistributed", name="t", layer=layer("Dense", units=2)),
        layer("Flatten", name="f"),
        {**layer("Dense", name="d", units=10), "build_config": {"input_shape": [None, 8]}},
    ),
    sequential(
        layer("ZeroPadding2D", name="z", padding=1),
        layer("Cropping2D", name="cr", cropping=[[1, 0], [0, 1]]),
        layer("UpSampling2D", name="u", size=2),
        layer("SeparableConv2D", name="s", filters=4, kernel_size=3),
        layer("DepthwiseConv2D", name="dw", kernel_size=3, depth_multiplier=2),
        layer("BatchNormalization", name="bn", axis=-1),
        layer("PReLU", name="pr", shared_axes=[1, 2]),
        layer("AveragePooling2D", name="ap", pool_size=2, strides=None),
        layer("Permute", name="pe", dims=[2, 1, 3]),
        layer("GlobalMaxPooling2D", name="g", keepdims=False),
        layer("RepeatVector", name="rv", n=3),
        layer("GRU", name="gru", units=2, reset_after=True),
        layer("Dense", name="d", units=10),
    ),
    functional(
        called("Flatten", "flat", tensor("in")),
        called("Dense", "a", tensor("flat"), units=16),
        called("Dense", "b", tensor("flat"), units=16),
        called("Concatenate", "cat", [tensor("a"), tensor("b")], axis=-1),
        called("Dense", "out", tensor("cat"), units=10),
        output="out",
    ),
]


INNER = {
    "module": "keras",
    "class_name": "Sequential",
    "registered_name": None,
    "config": {"name": "inner", "layers": [FLAT, layer("Dense", name="d", units=8)]},
    "name": "inner",
    "inbound_nodes": [{"args": [tensor("in")], "kwargs": {"mask": None}}],
}
SHARED = called("Dense", "b", tensor("a"), units=8)  # called twice: b(b(a))
SHARED["inbound_nodes"].append({"args": [tensor("b")], "kwargs": {}})
BASES.append(
    functional(
        INNER,
        called("Dense", "a", tensor("inner"), units=8),
        SHARED,
        called("Add", "sum", [tensor("inner"), tensor("b", 1)]),
        called("Dot", "dot", [tensor("sum"), tensor("a")], axes=1),
        called("Dense", "out", tensor("dot"), units=10),
        output="out",
    )
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if path:
        yield path
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield from _paths(value, (*path, key))


@examples(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_value_in_a_model_config_answers_422_or_passes(data: st.DataObject) -> None:
    spec = copy.deepcopy(digits_spec(**data.draw(st.sampled_from(BASES))))
    config = spec["model"]["keras_config"]
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from(list(_paths(config))))
        node = config
        for key in parents:
            node = node[key]
        node[last] = data.draw(JSON)
    try:
        check_spec(JobSpec.model_validate(spec), Settings())
    except SpecError as exc:
        assert all(e["loc"] and e["msg"] for e in exc.errors)


@pytest.mark.parametrize("verbose", [True, False, 1.0, "1", "silent", [1]])
def test_fit_verbose_takes_auto_or_a_count_and_nothing_that_looks_like_one(
    client: TestClient, verbose: Any
) -> None:
    spec = digits_spec(**{"fit.verbose": verbose})
    resp = client.post("/v1/jobs", json=spec)
    assert resp.status_code == 422, resp.text
    assert has(resp.json()["detail"], ["body", "fit", "verbose"], "should be 'auto', 0, 1 or 2")


@pytest.mark.parametrize("verbose", ["auto", 0, 1, 2])
def test_fit_verbose_accepts_what_keras_accepts(client: TestClient, verbose: Any) -> None:
    resp = client.post("/v1/jobs", json=digits_spec(**{"fit.verbose": verbose}))
    assert resp.status_code == 201, resp.text
    assert resp.json()["spec"]["fit"]["verbose"] == verbose
