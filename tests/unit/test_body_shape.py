"""A body's shape is refused before validation when no valid request has it: each bound, where
it is crossed (the error's location names known fields only), and a valid batch passes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError

from readmit.serving.body import (
    MAX_DEPTH,
    MAX_OBJECT_KEYS,
    MAX_STRING,
    UNKNOWN,
    check_shape,
    parse_bounded,
)
from readmit.serving.schemas import EXAMPLE


def _refusal(value: Any, max_items: int = 100) -> dict[str, Any]:
    with pytest.raises(RequestValidationError, match=r"at most|nested deeper") as raised:
        check_shape(value, max_items)
    (error,) = raised.value.errors()
    return dict(error)


def test_a_valid_batch_passes() -> None:
    records = [dict(EXAMPLE) for _ in range(100)]
    check_shape({"records": records}, max_items=100)


def test_a_long_string_deep_in_a_record_is_refused_where_it_is() -> None:
    records = [dict(EXAMPLE) for _ in range(3)]
    records[2]["race"] = "x" * (MAX_STRING + 1)
    error = _refusal({"records": records})
    assert error["type"] == "string_too_long"
    assert error["loc"] == ("body", "records", 2, "race")


def test_an_unknown_key_is_never_echoed() -> None:
    error = _refusal({"records": [{"<script>": ["y" * (MAX_STRING + 1)]}]})
    assert error["loc"] == ("body", "records", 0, UNKNOWN, 0)
    assert "<script>" not in str(error)


def test_each_size_bound_is_refused() -> None:
    assert _refusal({"records": [{}] * 101}, max_items=100)["type"] == "too_long"
    wide = {f"k{i}": 0 for i in range(MAX_OBJECT_KEYS + 1)}
    assert _refusal({"records": [wide]})["type"] == "too_many_fields"
    deep: Any = 0
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert _refusal(deep)["type"] == "too_deep"


def test_bounds_are_inclusive() -> None:
    check_shape({"records": [{}] * 100}, max_items=100)
    check_shape({f"k{i}": "x" * MAX_STRING for i in range(MAX_OBJECT_KEYS)}, max_items=1)
    deep: Any = 0
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    check_shape(deep, max_items=1)


def test_parse_bounded_checks_the_shape_of_what_it_parsed() -> None:
    assert parse_bounded(b'{"records": [1, 2]}', max_items=2) == {"records": [1, 2]}
    with pytest.raises(RequestValidationError, match="array of 3 items; at most 2"):
        parse_bounded(b'{"records": [1, 2, 3]}', max_items=2)
