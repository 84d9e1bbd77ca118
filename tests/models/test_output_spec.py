"""The spec's ``output`` section: a strict switch, stored only when it is set."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from models.spec import JobSpec
from tests.factories import digits_spec


@pytest.mark.parametrize(
    ("output", "loc", "msg"),
    [
        ({"export": 1}, ("output", "export"), "Input should be a valid boolean"),
        ({"export": "yes"}, ("output", "export"), "Input should be a valid boolean"),
        ({"export": None}, ("output", "export"), "Input should be a valid boolean"),
        ({"exports": True}, ("output", "exports"), "Extra inputs are not permitted"),
        ({"format": "onnx"}, ("output", "format"), "Extra inputs are not permitted"),
        (True, ("output",), "Input should be a valid dictionary or instance of OutputSpec"),
    ],
)
def test_output_refuses_anything_but_a_boolean_export(
    output: Any, loc: tuple[Any], msg: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(digits_spec(output=output))
    assert [(e["loc"], e["msg"]) for e in exc.value.errors()] == [(loc, msg)]


def test_output_is_stored_only_when_it_asks_for_more_than_the_default() -> None:
    plain = JobSpec.model_validate(digits_spec())
    assert plain.output.export is False
    assert "output" not in plain.model_dump(mode="json")
    assert "output" not in JobSpec.model_validate(digits_spec(output={})).model_dump()
    assert (
        "output" not in JobSpec.model_validate(digits_spec(output={"export": False})).model_dump()
    )
    exported = JobSpec.model_validate(digits_spec(output={"export": True}))
    assert exported.model_dump(mode="json")["output"] == {"export": True}
