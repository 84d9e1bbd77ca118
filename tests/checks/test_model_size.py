"""model_size and model_io on Functional graphs written by hand, without Keras.

The configs are shaped as ``model.to_json()`` writes them (tests/worker/
test_param_estimate.py checks fitq's sizes against Keras' own on the configs Keras
writes); here, the names of inputs and outputs, several of each, and the graphs
fitq refuses, each at the path of the field at fault.
"""

from __future__ import annotations

from typing import Any

import pytest

from checks.keras_config import check_keras_config, keras_object
from checks.model_size import ModelSize, SizeError, model_io, model_size

LOC = ("model", "keras_config")


def layer(cls: str, name: str, **config: Any) -> dict[str, Any]:
    return {
        "module": "keras.layers",
        "class_name": cls,
        "config": {"name": name, **config},
        "registered_name": None,
    }


def tensor(name: str, node: int = 0, index: int = 0) -> dict[str, Any]:
    return {
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, 4], "dtype": "float32", "keras_history": [name, node, index]},
    }


def source(name: str, *shape: int) -> dict[str, Any]:
    return {
        **layer("InputLayer", name, batch_shape=[None, *shape]),
        "name": name,
        "inbound_nodes": [],
    }


def called(cls: str, name: str, *calls: Any, **config: Any) -> dict[str, Any]:
    nodes = [{"args": [args], "kwargs": {}} for args in calls]
    return {**layer(cls, name, **config), "name": name, "inbound_nodes": nodes}


def functional(layers: list[dict[str, Any]], inputs: Any, outputs: Any) -> dict[str, Any]:
    return {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": {
            "name": "f",
            "trainable": True,
            "layers": layers,
            "input_layers": inputs,
            "output_layers": outputs,
        },
        "registered_name": "Functional",
        "build_config": {"input_shape": None},
    }


def two_in_two_out() -> dict[str, Any]:
    """a (4,) and b (3,), concatenated; o1: Dense(2), o2: Dense(1)."""
    return functional(
        [
            source("a", 4),
            source("b", 3),
            called("Concatenate", "cat", [tensor("a"), tensor("b")], axis=-1),
            called("Dense", "o1", tensor("cat"), units=2),
            called("Dense", "o2", tensor("cat"), units=1),
        ],
        [["a", 0, 0], ["b", 0, 0]],
        [["o1", 0, 0], ["o2", 0, 0]],
    )


def refusal(config: dict[str, Any], inputs: Any) -> SizeError:
    assert check_keras_config(config, LOC) == []
    with pytest.raises(SizeError) as info:
        model_size(config, inputs, LOC)
    return info.value


def test_two_inputs_and_two_outputs_by_name() -> None:
    config = two_in_two_out()
    assert check_keras_config(config, LOC) == []
    assert model_io(config) == (["a", "b"], ["o1", "o2"])
    size = model_size(config, {"b": (3,), "a": (4,)}, LOC)
    assert size == ModelSize(
        params=7 * 2 + 2 + 7 * 1 + 1,
        numbers=4 + 3 + 7 + 2 + 1,
        inputs={"a": (4,), "b": (3,)},
        outputs={"o1": (2,), "o2": (1,)},
    )
    assert list(size.inputs) == ["a", "b"] and list(size.outputs) == ["o1", "o2"]
    assert size.output == (2,)


def test_dicts_of_inputs_and_outputs_are_in_keras_order() -> None:
    config = two_in_two_out()
    body = config["config"]
    body["input_layers"] = {"b": ["b", 0, 0], "a": ["a", 0, 0]}
    body["output_layers"] = {"o2": ["o2", 0, 0], "o1": ["o1", 0, 0]}
    # Keras flattens a dict by its sorted keys
    assert model_io(config) == (["a", "b"], ["o1", "o2"])
    body["output_layers"] = {"first": ["o2", 0, 0]}
    error = refusal(config, {"a": (4,), "b": (3,)})
    assert error.loc == (*LOC, "config", "output_layers", "first")
    assert "expected the layer's name" in error.msg


def test_one_array_for_a_model_of_two_inputs_is_refused() -> None:
    error = refusal(two_in_two_out(), (4,))
    assert error.loc == (*LOC, "config", "input_layers")
    assert "2 inputs ['a', 'b']" in error.msg and "dict keyed by these names" in error.msg
    error = refusal(two_in_two_out(), {"a": (4,), "c": (3,)})
    assert "['a', 'b'], but the data gives ['a', 'c']" in error.msg


def test_an_input_that_is_not_the_datas_names_the_input() -> None:
    error = refusal(two_in_two_out(), {"a": (4,), "b": (5,)})
    assert error.loc == (*LOC, "config", "layers", 1, "config", "batch_shape")
    assert "input 'b'" in error.msg and "[3]" in error.msg and "[5]" in error.msg


def test_a_single_input_and_output_keep_the_old_interface() -> None:
    config = functional(
        [source("x", 8, 8, 1), called("Flatten", "flat", tensor("x"))],
        [["x", 0, 0]],
        [["flat", 0, 0]],
    )
    size = model_size(config, (8, 8, 1), LOC)
    assert (size.output, size.inputs, size.outputs) == ((64,), {"x": (8, 8, 1)}, {"flat": (64,)})
    # a single tensor, as Keras writes the inputs of keras.Model(x, y)
    config["config"]["input_layers"] = ["x", 0, 0]
    config["config"]["output_layers"] = ["flat", 0, 0]
    assert model_size(config, (8, 8, 1), LOC) == size


def test_sequential_names() -> None:
    model: dict[str, Any] = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "s",
            "layers": [
                layer("InputLayer", "pixels", batch_shape=[None, 4]),
                layer("Dense", "d", units=2),
            ],
        },
    }
    assert model_io(model) == (["pixels"], ["d"])
    assert model_size(model, {"pixels": (4,)}, LOC).outputs == {"d": (2,)}
    model["config"]["layers"].pop(0)
    # Keras adds an InputLayer of its own name
    assert model_io(model) == (["input_layer"], ["d"])


def test_the_keras_io_convnet_on_8x8_is_refused_at_the_layer_that_shrinks_to_nothing() -> None:
    """Conv2D(32, 3) -> MaxPooling2D(2) -> Conv2D(64, 3) -> MaxPooling2D(2) on 8x8x1."""
    config = functional(
        [
            source("x", 8, 8, 1),
            called("Conv2D", "c1", tensor("x"), filters=32, kernel_size=3),
            called("MaxPooling2D", "p1", tensor("c1"), pool_size=2),
            called("Conv2D", "c2", tensor("p1"), filters=64, kernel_size=3),
            called("MaxPooling2D", "p2", tensor("c2"), pool_size=2),
            called("Flatten", "flat", tensor("p2")),
        ],
        [["x", 0, 0]],
        [["flat", 0, 0]],
    )
    error = refusal(config, (8, 8, 1))
    assert error.loc == (*LOC, "config", "layers", 4, "config")
    assert "layer 'p2'" in error.msg and "does not fit samples of spatial size [1, 1]" in error.msg


def test_a_reference_to_a_missing_layer_is_refused() -> None:
    config = functional(
        [source("x", 4), called("Dense", "d", tensor("nope"), units=2)],
        [["x", 0, 0]],
        [["d", 0, 0]],
    )
    error = refusal(config, (4,))
    assert error.loc == (*LOC, "config", "layers", 1, "inbound_nodes", 0)
    assert "layer 'nope', which the model does not hold" in error.msg
    config["config"]["layers"][1]["inbound_nodes"][0]["args"] = [tensor("x", node=1)]
    assert "call 1 of layer 'x', which is never made" in refusal(config, (4,)).msg
    config["config"]["layers"][1]["inbound_nodes"][0]["args"] = [tensor("x")]
    config["config"]["output_layers"] = [["gone", 0, 0]]
    error = refusal(config, (4,))
    assert error.loc == (*LOC, "config", "output_layers")
    assert "'gone', which the model does not hold" in error.msg
    config["config"]["output_layers"] = [["d", 0, 1]]
    error = refusal(config, (4,))
    assert "received output 1 of call 0 of 'd'; it gives 1" in error.msg


def test_a_loop_is_refused_naming_its_layers() -> None:
    config = functional(
        [
            source("x", 4),
            called("Dense", "a", tensor("c"), units=4),
            called("Dense", "b", tensor("a"), units=4),
            called("Add", "c", [tensor("b"), tensor("x")]),
        ],
        [["x", 0, 0]],
        [["c", 0, 0]],
    )
    error = refusal(config, (4,))
    assert error.loc == (*LOC, "config", "layers", 1, "inbound_nodes")
    assert "a loop through the layers ['a', 'b', 'c']" in error.msg
    # a layer called on its own output
    config["config"]["layers"][1]["inbound_nodes"][0]["args"] = [tensor("a")]
    assert "a loop" in refusal(config, (4,)).msg


def test_a_merge_of_shapes_that_do_not_fit_is_refused() -> None:
    config = functional(
        [
            source("x", 4),
            called("Dense", "a", tensor("x"), units=4),
            called("Dense", "b", tensor("x"), units=3),
            called("Add", "sum", [tensor("a"), tensor("b")]),
        ],
        [["x", 0, 0]],
        [["sum", 0, 0]],
    )
    error = refusal(config, (4,))
    assert error.loc == (*LOC, "config", "layers", 3, "config")
    assert "layer 'sum'" in error.msg and "[[4], [3]]; expected one shape" in error.msg
    config["config"]["layers"][3] = called("Concatenate", "sum", [tensor("a"), tensor("b")], axis=1)
    assert model_size(config, (4,), LOC).output == (7,)


def test_an_input_layer_left_out_of_the_inputs_is_refused() -> None:
    config = two_in_two_out()
    config["config"]["input_layers"] = [["a", 0, 0]]
    error = refusal(config, (4,))
    assert error.loc == (*LOC, "config", "input_layers")
    assert "InputLayer 'b' is not one of the model's inputs" in error.msg


def test_two_outputs_of_one_layer_are_refused() -> None:
    config = two_in_two_out()
    config["config"]["output_layers"] = [["o1", 0, 0], ["o1", 0, 0]]
    assert "two outputs come from the layer 'o1'" in refusal(config, {"a": (4,), "b": (3,)}).msg


def test_a_shared_layer_counts_its_weights_once() -> None:
    config = functional(
        [
            source("x", 4),
            called("Dense", "shared", tensor("x"), tensor("shared"), units=4),
            called("Add", "sum", [tensor("shared", 0), tensor("shared", 1)]),
        ],
        [["x", 0, 0]],
        [["sum", 0, 0]],
    )
    size = model_size(config, (4,), LOC)
    assert (size.params, size.numbers) == (4 * 4 + 4, 4 + 4 + 4 + 4)


def test_a_model_inside_a_model_is_sized_on_the_tensors_it_is_called_on() -> None:
    inner: dict[str, Any] = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "inner", "layers": [layer("Dense", "d", units=5)]},
        "registered_name": None,
        "name": "inner",
        "inbound_nodes": [{"args": [tensor("x")], "kwargs": {"training": None}}],
    }
    config = functional([source("x", 4), inner], [["x", 0, 0]], [["inner", 0, 0]])
    size = model_size(config, (4,), LOC)
    assert (size.params, size.numbers, size.outputs) == (4 * 5 + 5, 4 + 5, {"inner": (5,)})
    inner["config"]["layers"].insert(0, layer("InputLayer", "i", batch_shape=[None, 3]))
    error = refusal(config, (4,))
    assert error.loc == (
        *LOC,
        "config",
        "layers",
        1,
        "config",
        "layers",
        0,
        "config",
        "batch_shape",
    )
    assert "layer 'inner': input 'i'" in error.msg and "called on" in error.msg


def test_get_config_without_the_wrapper_is_read_as_the_same_model() -> None:
    wrapped = two_in_two_out()
    bare = wrapped["config"]
    assert check_keras_config(bare, LOC) == []
    assert model_io(bare) == model_io(wrapped)
    shapes = {"a": (4,), "b": (3,)}
    assert model_size(bare, shapes, LOC) == model_size(wrapped, shapes, LOC)
    assert keras_object(bare) == {
        "module": "keras.src.models.functional",
        "class_name": "Functional",
        "config": bare,
        "registered_name": None,
    }
    # a refusal points into the config as given
    bare["layers"][3]["config"]["units"] = 0
    with pytest.raises(SizeError) as info:
        model_size(bare, shapes, LOC)
    assert info.value.loc == (*LOC, "layers", 3, "config", "units")


def test_sized_calls_are_bounded_across_models_inside_models() -> None:
    """A model called many times inside a model called many times is refused, not walked."""
    inner: dict[str, Any] = {
        "module": "keras",
        "class_name": "Sequential",
        "config": {
            "name": "inner",
            "layers": [layer("Dense", f"d{i}", units=4) for i in range(50)],
        },
        "registered_name": None,
        "name": "inner",
        "inbound_nodes": [
            {"args": [tensor("x" if k == 0 else "inner", max(k - 1, 0))], "kwargs": {}}
            for k in range(100)
        ],
    }
    config = functional([source("x", 4), inner], [["x", 0, 0]], [["inner", 99, 0]])
    error = refusal(config, (4,))
    assert "expected at most 4000 layer calls in all" in error.msg
