"""shape_rewards and LinearShaper: the invariants, hand-computed values, fallbacks and bad input."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping import (
    NORMALIZATIONS,
    SPARSE,
    LinearShaper,
    ShapingParams,
    functional,
    shape_rewards,
)

PROPERTY = settings(max_examples=60, deadline=None)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
FINITE = st.floats(allow_nan=False, allow_infinity=False)


@st.composite
def attribution_rows(draw, mask: torch.Tensor) -> torch.Tensor:
    """``B x T`` float64 attributions: per row random, all zero, one-signed or cancelling."""
    rows = []
    for row_mask in mask:
        n = int(row_mask.sum())
        kind = draw(st.sampled_from(["random", "zero", "one_sign", "cancel_exact", "cancel_near"]))
        if kind == "zero" or n == 0:
            values = [0.0] * n
        elif kind == "random":
            values = draw(st.lists(FINITE, min_size=n, max_size=n))
        elif kind == "one_sign":
            sign = draw(st.sampled_from([1.0, -1.0]))
            magnitudes = st.floats(min_value=0.0, max_value=1e300)
            values = [sign * v for v in draw(st.lists(magnitudes, min_size=n, max_size=n))]
        else:
            base = draw(st.lists(st.floats(-1e6, 1e6), min_size=n, max_size=n))
            if kind == "cancel_exact":
                values = base[: n // 2] + [-v for v in base[: n // 2]] + [0.0] * (n % 2)
            else:
                mean = math.fsum(base) / n
                values = [v - mean for v in base]
            values = draw(st.permutations(values))
        padding = draw(st.lists(FINITE, min_size=mask.shape[1] - n, max_size=mask.shape[1] - n))
        row = torch.zeros(mask.shape[1], dtype=torch.float64)
        row[row_mask] = torch.tensor(values, dtype=torch.float64)
        row[~row_mask] = torch.tensor(padding, dtype=torch.float64)
        rows.append(row)
    return torch.stack(rows)


@st.composite
def batches(draw, n_signals: int = 2, reward_bound: float = 1e6):
    """(sequence_reward B, {signal: B x T}, response_mask B x T) with B in 1..4 and T in 1..7."""
    batch, width = draw(st.integers(1, 4)), draw(st.integers(1, 7))
    flat_mask = draw(st.lists(st.booleans(), min_size=batch * width, max_size=batch * width))
    mask = torch.tensor(flat_mask, dtype=torch.bool).reshape(batch, width)
    reward = torch.tensor(
        draw(st.lists(st.floats(-reward_bound, reward_bound), min_size=batch, max_size=batch)),
        dtype=torch.float64,
    )
    attributions = {f"signal{j}": draw(attribution_rows(mask)) for j in range(n_signals)}
    return reward, attributions, mask


@st.composite
def simplex(draw, names: tuple[str, ...]) -> dict[str, float]:
    raw = draw(st.lists(st.floats(0.0, 1.0), min_size=len(names), max_size=len(names)))
    raw[draw(st.integers(0, len(names) - 1))] += 0.5
    return {name: value / sum(raw) for name, value in zip(names, raw, strict=True)}


def params_for(weights: dict[str, float], normalization: str = "sum", **options) -> ShapingParams:
    return ShapingParams(weights, normalization=normalization, normalize=True, **options)


SIGNALS = ("signal0", "signal1", SPARSE)


# Properties


@PROPERTY
@given(
    batch=batches(),
    weights=simplex(SIGNALS),
    normalization=st.sampled_from(NORMALIZATIONS),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_rows_sum_to_the_reward_and_vanish_off_the_response(batch, weights, normalization, dtype):
    reward, attributions, mask = batch
    reward = reward.to(dtype)
    shaped = shape_rewards(reward, attributions, params_for(weights, normalization), mask)
    assert shaped.dtype == dtype and shaped.shape == mask.shape
    assert torch.isfinite(shaped).all()
    assert (shaped[~mask] == 0).all()
    has_response = mask.any(dim=1)
    row_sums = shaped.double().sum(dim=1)
    # Each token is rounded once into `dtype`; the shares themselves sum to 1 in float64.
    slack = mask.shape[1] * torch.finfo(dtype).eps * shaped.double().abs().amax(dim=1)
    slack = slack + 1e-12 * (1 + reward.double().abs())
    assert ((row_sums - reward.double()).abs() <= slack)[has_response].all()
    assert (shaped[~has_response] == 0).all()


@PROPERTY
@given(batch=batches(n_signals=1, reward_bound=1e30), normalization=st.sampled_from(NORMALIZATIONS))
def test_any_finite_attribution_gives_finite_bounded_rewards(batch, normalization):
    reward, attributions, mask = batch
    params = params_for({"signal0": 1.0}, normalization)
    shaped = shape_rewards(reward.float(), attributions, params, mask)
    assert torch.isfinite(shaped).all()
    shares = shape_rewards(torch.ones_like(reward), attributions, params, mask)
    assert shares.abs().max() <= 1 / params.cancellation_tolerance + 1e-9
    if normalization != "sum":
        assert (shares >= 0).all()


@PROPERTY
@given(batch=batches(), weights=simplex(SIGNALS), normalization=st.sampled_from(NORMALIZATIONS))
def test_order_of_the_weights_does_not_matter(batch, weights, normalization):
    reward, attributions, mask = batch
    forward = shape_rewards(reward, attributions, params_for(weights, normalization), mask)
    reversed_weights = dict(reversed(list(weights.items())))
    backward = shape_rewards(
        reward, attributions, params_for(reversed_weights, normalization), mask
    )
    torch.testing.assert_close(forward, backward, rtol=1e-12, atol=1e-9 * (1 + reward.abs().max()))


@PROPERTY
@given(
    batch=batches(),
    first=simplex(SIGNALS),
    second=simplex(SIGNALS),
    mix=st.floats(0.0, 1.0),
    normalization=st.sampled_from(NORMALIZATIONS),
)
def test_linear_in_the_weights(batch, first, second, mix, normalization):
    reward, attributions, mask = batch
    blended = {name: mix * first[name] + (1 - mix) * second[name] for name in SIGNALS}
    from_first = shape_rewards(reward, attributions, params_for(first, normalization), mask)
    from_second = shape_rewards(reward, attributions, params_for(second, normalization), mask)
    expected = mix * from_first + (1 - mix) * from_second
    actual = shape_rewards(reward, attributions, params_for(blended, normalization), mask)
    torch.testing.assert_close(actual, expected, rtol=1e-9, atol=1e-9 * (1 + reward.abs().max()))


@PROPERTY
@given(
    batch=batches(n_signals=1),
    sign=st.sampled_from([1.0, -1.0]),
    exponent=st.integers(-60, 60),
)
def test_normalizations_agree_on_one_signed_attributions(batch, sign, exponent):
    reward, attributions, mask = batch
    phi = {"signal0": sign * attributions["signal0"].abs().clamp(max=1e250) * 2.0**exponent}
    results = [
        shape_rewards(reward, phi, params_for({"signal0": 1.0}, name), mask)
        for name in NORMALIZATIONS
    ]
    for other in results[1:]:
        torch.testing.assert_close(other, results[0], rtol=1e-12, atol=1e-12)


@PROPERTY
@given(
    batch=batches(n_signals=1),
    scale=st.floats(1e-30, 1e30),
    normalization=st.sampled_from(NORMALIZATIONS),
)
def test_shares_do_not_depend_on_the_attribution_scale(batch, scale, normalization):
    reward, attributions, mask = batch
    params = params_for({"signal0": 1.0}, normalization)
    phi = attributions["signal0"].clamp(-1e250, 1e250)
    # Away from the float64 limits, so that scaling neither overflows nor underflows.
    phi = torch.where(phi.abs() < 1e-250, 0.0, phi)
    plain = shape_rewards(reward, {"signal0": phi}, params, mask)
    scaled = shape_rewards(reward, {"signal0": phi * scale}, params, mask)
    # A row sitting within rounding of the cancellation boundary may fall either side; others match.
    matches = torch.isclose(plain, scaled, rtol=1e-9, atol=1e-9 * (1 + reward.abs().max()))
    near_boundary = _near_cancellation_boundary(phi, mask, params.cancellation_tolerance)
    assert (matches.all(dim=1) | near_boundary).all()


def _near_cancellation_boundary(phi: torch.Tensor, mask: torch.Tensor, tolerance: float):
    phi = torch.where(mask, phi / phi.abs().amax(dim=1, keepdim=True).clamp(min=1e-300), 0.0)
    ratio = phi.sum(dim=1).abs() / phi.abs().sum(dim=1).clamp(min=1e-300)
    return (ratio - tolerance).abs() < 1e-9


@PROPERTY
@given(batch=batches(n_signals=1), normalization=st.sampled_from(NORMALIZATIONS))
def test_attributions_outside_the_mask_are_ignored(batch, normalization):
    reward, attributions, mask = batch
    params = params_for({"signal0": 0.5, SPARSE: 0.5}, normalization)
    phi = attributions["signal0"]
    junk = torch.where(mask, phi, torch.full_like(phi, math.nan))
    torch.testing.assert_close(
        shape_rewards(reward, {"signal0": junk}, params, mask),
        shape_rewards(reward, {"signal0": torch.where(mask, phi, 0.0)}, params, mask),
    )


@settings(max_examples=30, deadline=None)
@given(batch=batches(), weights=simplex(SIGNALS), normalization=st.sampled_from(NORMALIZATIONS))
def test_each_row_is_shaped_on_its_own(batch, weights, normalization):
    reward, attributions, mask = batch
    params = params_for(weights, normalization)
    whole = shape_rewards(reward, attributions, params, mask)
    for b in range(len(reward)):
        row = {name: phi[b : b + 1] for name, phi in attributions.items()}
        torch.testing.assert_close(
            shape_rewards(reward[b : b + 1], row, params, mask[b : b + 1]), whole[b : b + 1]
        )


# Exact values


def test_sparse_puts_the_whole_reward_on_the_last_response_token():
    mask = torch.tensor(
        [
            [False, True, True, True, False],  # prompt and padding around the response
            [True, False, True, False, False],  # a gap, e.g. a tool turn
            [False, False, False, False, True],
            [False, False, False, False, False],
        ]
    )
    reward = torch.tensor([2.0, -1.5, 0.25, 7.0])
    shaped = shape_rewards(reward, {}, ShapingParams({SPARSE: 1.0}), mask)
    expected = torch.zeros(4, 5)
    expected[0, 3], expected[1, 2], expected[2, 4] = 2.0, -1.5, 0.25
    assert torch.equal(shaped, expected)


def test_abc_is_attention_blended_with_sparse():
    beta = 0.3
    attention = torch.tensor([[0.0, 0.2, 0.3, 0.5], [0.6, 0.4, 0.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    reward = torch.tensor([1.5, -2.0], dtype=torch.float64)
    shaped = shape_rewards(
        reward, {"attention": attention}, ShapingParams({"attention": beta, SPARSE: 1 - beta}), mask
    )
    alpha = torch.tensor([[0.0, 0.2, 0.3, 0.5], [0.6, 0.4, 0.0, 0.0]], dtype=torch.float64)
    one_hot_last = torch.tensor([[0, 0, 0, 1], [0, 1, 0, 0]], dtype=torch.float64)
    expected = reward[:, None] * (beta * alpha + (1 - beta) * one_hot_last)
    torch.testing.assert_close(shaped, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("normalization", "shares"),
    [
        ("sum", [3 / 4, -1 / 4, 2 / 4]),  # phi / sum(phi) = phi / 4
        ("abs", [3 / 6, 1 / 6, 2 / 6]),  # |phi| / 6
        ("positive", [3 / 5, 0.0, 2 / 5]),  # relu(phi) / 5
    ],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_three_token_example_by_hand(normalization, shares, dtype):
    phi = torch.tensor([[3.0, -1.0, 2.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    reward = torch.tensor([-2.0], dtype=dtype)
    shaped = shape_rewards(
        reward,
        {"kernel_shap": phi},
        ShapingParams({"kernel_shap": 1.0}, normalization=normalization),
        mask,
    )
    expected = torch.tensor([[-2.0 * s for s in shares]], dtype=dtype)
    torch.testing.assert_close(shaped, expected)
    if normalization == "sum":
        assert shaped[0, 1] > 0  # pushed the score down: credit of the opposite sign to r


def _shares(phi, normalization="sum", tolerance=0.1, mask=None):
    phi = torch.tensor([phi], dtype=torch.float64)
    mask = torch.ones_like(phi, dtype=torch.bool) if mask is None else torch.tensor([mask])
    params = ShapingParams(
        {"phi": 1.0}, normalization=normalization, cancellation_tolerance=tolerance
    )
    return shape_rewards(torch.ones(1, dtype=torch.float64), {"phi": phi}, params, mask)[0].tolist()


def test_sum_keeps_signed_shares_exactly_at_the_cancellation_boundary():
    # |sum phi| / sum|phi| = 2 / 8 = 0.25 exactly.
    assert _shares([5.0, -3.0], tolerance=0.25) == [2.5, -1.5]


def test_sum_falls_back_to_abs_just_below_the_cancellation_boundary():
    assert _shares([5.0, -3.0], tolerance=math.nextafter(0.25, 1.0)) == [0.625, 0.375]


def test_sum_falls_back_to_abs_when_attributions_cancel_exactly():
    assert _shares([2.0, -2.0, 0.0, 4.0, -4.0]) == pytest.approx([1 / 6, 1 / 6, 0.0, 1 / 3, 1 / 3])


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_all_zero_attributions_fall_back_to_uniform_over_the_response(normalization):
    shares = _shares([0.0, 0.0, 5.0, 0.0], normalization, mask=[True, True, False, True])
    assert shares == [1 / 3, 1 / 3, 0.0, 1 / 3]


def test_positive_without_positive_attribution_falls_back_to_abs():
    assert _shares([-1.0, 0.0, -3.0], "positive") == [0.25, 0.0, 0.75]


def test_positive_ignores_negative_tokens_however_large():
    assert _shares([1e-6, -100.0, 3e-6], "positive") == pytest.approx([0.25, 0.0, 0.75])


def test_extreme_magnitudes_neither_overflow_nor_underflow():
    assert _shares([1.5e308, 1.5e308, -1.5e308]) == [1.0, 1.0, -1.0]
    assert _shares([5e-324, 0.0, 1e-323]) == pytest.approx([1 / 3, 0.0, 2 / 3])


def test_empty_response_rows_get_zeros_whatever_the_signal():
    mask = torch.tensor([[False, False], [True, True]])
    phi = torch.tensor([[1.0, 2.0], [1.0, 3.0]])
    params = ShapingParams({"lime": 0.5, SPARSE: 0.5})
    shaped = shape_rewards(torch.tensor([4.0, 4.0]), {"lime": phi}, params, mask)
    assert torch.equal(shaped, torch.tensor([[0.0, 0.0], [0.5, 3.5]]))


def test_zero_weight_signals_need_no_attribution_and_extra_ones_are_unused():
    mask = torch.ones(1, 3, dtype=torch.bool)
    params = ShapingParams({"lime": 0.0, SPARSE: 1.0})
    unused = {"attention": torch.full((1, 3), math.nan)}
    shaped = shape_rewards(torch.tensor([1.0]), unused, params, mask)
    assert torch.equal(shaped, torch.tensor([[0.0, 0.0, 1.0]]))


def test_result_follows_the_reward_dtype_not_the_attributions():
    mask = torch.ones(1, 3, dtype=torch.bool)
    phi = torch.tensor([[1.0, 1.0, 2.0]], dtype=torch.float16)
    params = ShapingParams({"attention": 1.0})
    shaped = shape_rewards(
        torch.tensor([1.0], dtype=torch.float64), {"attention": phi}, params, mask
    )
    assert shaped.dtype == torch.float64
    assert shaped.tolist() == [[0.25, 0.25, 0.5]]
    half = shape_rewards(
        torch.tensor([1.0], dtype=torch.bfloat16), {"attention": phi}, params, mask
    )
    assert half.dtype == torch.bfloat16


@pytest.mark.parametrize("device", DEVICES)
def test_linear_shaper_matches_the_function(device):
    generator = torch.Generator().manual_seed(0)
    phi = torch.randn(3, 6, generator=generator, dtype=torch.float64)
    mask = torch.rand(3, 6, generator=generator) > 0.3
    reward = torch.randn(3, generator=generator, dtype=torch.float64)
    params = ShapingParams({"kernel_shap": 0.6, SPARSE: 0.4}, normalization="positive")
    on_cpu = shape_rewards(reward, {"kernel_shap": phi}, params, mask)
    shaper = LinearShaper(params)
    on_device = shaper(reward.to(device), {"kernel_shap": phi.to(device)}, mask.to(device))
    assert on_device.device.type == device
    torch.testing.assert_close(on_device.cpu(), on_cpu, rtol=1e-12, atol=1e-12)


def test_docstring_examples_run():
    assert doctest.testmod(functional, raise_on_error=True).attempted >= 2


# Bad input


def _good():
    mask = torch.tensor([[True, True, False]])
    return torch.tensor([1.0]), {"attention": torch.tensor([[0.5, 0.5, 0.0]])}, mask


def test_missing_signal_names_it_and_the_signals_provided():
    reward, attributions, mask = _good()
    attributions["lime"] = attributions["attention"]
    params = ShapingParams({"kernel_shap": 0.5, SPARSE: 0.5})
    with pytest.raises(InvalidArgumentError) as caught:
        shape_rewards(reward, attributions, params, mask)
    message = str(caught.value)
    assert "'kernel_shap' is missing" in message and "['attention', 'lime']" in message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_attribution_on_the_response_names_the_signal_and_row(bad):
    reward, attributions, mask = _good()
    reward, mask = reward.repeat(2), mask.repeat(2, 1)
    phi = attributions["attention"].repeat(2, 1)
    phi[1, 1] = bad
    with pytest.raises(InvalidArgumentError, match=r"attributions\['attention'\].*rows \[1\]"):
        shape_rewards(reward, {"attention": phi}, ShapingParams({"attention": 1.0}), mask)


def test_attribution_shape_mismatch_names_both_shapes():
    reward, _, mask = _good()
    with pytest.raises(
        InvalidArgumentError, match=r"attributions\['attention'\]='shape \(1, 4\)'.*\(1, 3\)"
    ):
        shape_rewards(
            reward, {"attention": torch.zeros(1, 4)}, ShapingParams({"attention": 1.0}), mask
        )


def test_attribution_must_be_a_float_tensor():
    reward, _, mask = _good()
    params = ShapingParams({"attention": 1.0})
    with pytest.raises(InvalidArgumentError, match=r"attributions\['attention'\]=torch.int64"):
        shape_rewards(reward, {"attention": torch.ones(1, 3, dtype=torch.long)}, params, mask)
    with pytest.raises(InvalidArgumentError, match=r"attributions\['attention'\]=\[\[1.0"):
        shape_rewards(reward, {"attention": [[1.0, 1.0, 0.0]]}, params, mask)


def test_sparse_attribution_is_refused():
    reward, _, mask = _good()
    with pytest.raises(
        InvalidArgumentError, match=r"attributions\['sparse'\].*last response token"
    ):
        shape_rewards(reward, {SPARSE: torch.ones(1, 3)}, ShapingParams({SPARSE: 1.0}), mask)


@pytest.mark.parametrize(
    "mask", [torch.tensor([[1, 1, 0]]), torch.tensor([[1.0, 1.0, 0.0]]), [[True]]]
)
def test_non_bool_mask_is_refused(mask):
    reward, attributions, _ = _good()
    with pytest.raises(InvalidArgumentError, match="response_mask=.*a bool tensor"):
        shape_rewards(reward, attributions, ShapingParams({"attention": 1.0}), mask)


@pytest.mark.parametrize(
    "mask", [torch.ones(2, 3, dtype=torch.bool), torch.ones(3, dtype=torch.bool)]
)
def test_mask_shape_mismatch_names_the_shape(mask):
    reward, attributions, _ = _good()
    with pytest.raises(InvalidArgumentError, match=r"response_mask='shape \((2, 3|3,)\)'.*B = 1"):
        shape_rewards(reward, attributions, ShapingParams({SPARSE: 1.0}), mask)


@pytest.mark.parametrize(
    ("reward", "match"),
    [
        (torch.ones(1, 1), r"sequence_reward=\(1, 1\): expected a 1-D tensor"),
        ([1.0], r"sequence_reward=\[1.0\]: expected a 1-D tensor"),
        (torch.ones(1, dtype=torch.long), "sequence_reward=torch.int64"),
        (torch.tensor([math.nan]), r"sequence_reward=\[nan\].*rows \[0\]"),
    ],
)
def test_bad_sequence_reward_is_refused(reward, match):
    _, attributions, mask = _good()
    with pytest.raises(InvalidArgumentError, match=match):
        shape_rewards(reward, attributions, ShapingParams({"attention": 1.0}), mask)


def test_params_and_attributions_types_are_checked():
    reward, attributions, mask = _good()
    with pytest.raises(InvalidArgumentError, match="params=.*ShapingParams"):
        shape_rewards(reward, attributions, {"attention": 1.0}, mask)
    with pytest.raises(InvalidArgumentError, match="attributions=.*dict"):
        shape_rewards(reward, [attributions["attention"]], ShapingParams({"attention": 1.0}), mask)
    with pytest.raises(InvalidArgumentError, match="params=.*ShapingParams"):
        LinearShaper({"attention": 1.0})
