"""ShapingParams: the simplex, its validation, and the round trip through JSON."""

from __future__ import annotations

import doctest
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tokenshape.shaping.params as params_module
from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping import NORMALIZATIONS, SPARSE, ShapingParams

SIMPLEX_WEIGHTS = st.dictionaries(
    st.sampled_from(["sparse", "attention", "kernel_shap", "lime"]),
    st.floats(min_value=0.0, max_value=10.0),
    min_size=1,
).filter(lambda w: sum(w.values()) > 1e-3)


def test_weights_on_the_simplex_are_kept_as_given():
    params = ShapingParams({"attention": 0.25, SPARSE: 0.75})
    assert params.weights == {"attention": 0.25, "sparse": 0.75}
    assert params.normalization == "sum"
    assert params.cancellation_tolerance == 0.1


def test_negative_weight_names_the_signal():
    with pytest.raises(InvalidArgumentError, match=r"weights\['attention'\]=-0.5"):
        ShapingParams({"attention": -0.5, SPARSE: 1.5}, normalize=True)


@pytest.mark.parametrize("value", [math.nan, math.inf, "heavy", None])
def test_non_numeric_or_non_finite_weight_is_refused(value):
    with pytest.raises(InvalidArgumentError, match=r"weights\['lime'\]"):
        ShapingParams({"lime": value, SPARSE: 1.0})


def test_weights_not_summing_to_one_error_names_the_values_and_the_sum():
    with pytest.raises(InvalidArgumentError) as caught:
        ShapingParams({"attention": 0.3, SPARSE: 0.3})
    message = str(caught.value)
    assert "'attention': 0.3" in message and "'sparse': 0.3" in message
    assert "sum to 0.6" in message and "normalize=True" in message
    assert caught.value.name == "weights"


def test_weights_within_tolerance_of_one_are_accepted():
    params = ShapingParams({"attention": 0.5, SPARSE: 0.5 + 5e-7})
    assert params.weights[SPARSE] == 0.5 + 5e-7


def test_normalize_rescales_onto_the_simplex():
    params = ShapingParams({"attention": 1.0, SPARSE: 3.0}, normalize=True)
    assert params.weights == {"attention": 0.25, "sparse": 0.75}


def test_all_zero_weights_are_refused_even_with_normalize():
    with pytest.raises(InvalidArgumentError, match="at least one weight > 0"):
        ShapingParams({"attention": 0.0, SPARSE: 0.0}, normalize=True)


@pytest.mark.parametrize("weights", [{}, [("sparse", 1.0)], {"": 1.0}, {3: 1.0}])
def test_malformed_weights_are_refused(weights):
    with pytest.raises(InvalidArgumentError, match="weights"):
        ShapingParams(weights)


def test_unknown_normalization_lists_the_choices():
    with pytest.raises(
        InvalidArgumentError, match=r"normalization='softmax'.*'sum', 'abs', 'positive'"
    ):
        ShapingParams({SPARSE: 1.0}, normalization="softmax")


@pytest.mark.parametrize("tolerance", [0.0, -0.1, 1.5, math.nan, True, "0.1"])
def test_cancellation_tolerance_outside_the_interval_is_refused(tolerance):
    with pytest.raises(InvalidArgumentError, match=r"cancellation_tolerance=.*\(0, 1\]"):
        ShapingParams({SPARSE: 1.0}, cancellation_tolerance=tolerance)


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        ShapingParams({SPARSE: 1.0}, "abs")  # type: ignore[misc]


def test_active_signals_skip_zero_weights_and_keep_the_order():
    params = ShapingParams({"lime": 0.5, "attention": 0.0, SPARSE: 0.5})
    assert params.active_signals == ("lime", "sparse")


def test_normalize_flag_does_not_affect_equality():
    assert ShapingParams({SPARSE: 1.0}) == ShapingParams({SPARSE: 1.0}, normalize=True)
    assert ShapingParams({SPARSE: 1.0}) != ShapingParams({SPARSE: 1.0}, normalization="abs")


def test_from_dict_without_a_tolerance_uses_the_default():
    params = ShapingParams.from_dict({"weights": {SPARSE: 1.0}, "normalization": "abs"})
    assert params == ShapingParams({SPARSE: 1.0}, normalization="abs")


@settings(max_examples=50, deadline=None)
@given(
    weights=SIMPLEX_WEIGHTS,
    normalization=st.sampled_from(NORMALIZATIONS),
    tolerance=st.floats(min_value=1e-6, max_value=1.0),
)
def test_round_trip_through_json(weights, normalization, tolerance):
    params = ShapingParams(
        weights, normalization=normalization, normalize=True, cancellation_tolerance=tolerance
    )
    assert math.isclose(sum(params.weights.values()), 1.0, abs_tol=1e-6)
    restored = ShapingParams.from_dict(json.loads(json.dumps(params.to_dict())))
    assert restored == params


def test_docstring_examples_run():
    assert doctest.testmod(params_module, raise_on_error=True).attempted >= 2
