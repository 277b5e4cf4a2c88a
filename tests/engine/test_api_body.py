"""The API's storability check of a body (engine.api._storable): its quick walk (_fits), which lets a body
through without naming each value, agrees with the naming walk on every kind of value the store refuses."""
import pytest

from engine.api import INT64, MAX_DEPTH, ApiError, _fits, _storable


def _nested(depth: int):
    value = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


CASES = [
    ({"patient": {"id": "1", "authority": "A"}, "action": "consult", "user": {"id": "u", "profession": "10"}}, True),
    ({"a": [1, 2.5, True, None, "é", {"b": []}]}, True),
    ({"a": INT64 - 1, "b": -INT64}, True),
    (_nested(MAX_DEPTH), True),
    (_nested(MAX_DEPTH + 1), False),
    ({"a": "\ud800"}, False),          # a lone surrogate, in a value
    ({"\udfff": 1}, False),            # in a key
    ({"a": ["ok", "nul\x00"]}, False),
    ({"a": INT64}, False),
    ({"a": [-INT64 - 1]}, False),
    ({"a": float("inf")}, False),
    ({"a": float("nan")}, False),
]


@pytest.mark.parametrize("body,fits", CASES)
def test_the_quick_walk_agrees_with_the_naming_one(body, fits):
    assert _fits(body) is fits
    if fits:
        _storable(body)
    else:
        with pytest.raises(ApiError) as e:
            _storable(body)
        assert e.value.status == 400 and e.value.code in ("field.invalid", "body.too_deep")
