"""Tests of tokenshape.tuning.space: Sobol points on the simplex and the BoTorch constraint form."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import ShapingParams
from tokenshape.tuning.space import SimplexSpace


def space_of(k: int, normalization: str = "sum") -> SimplexSpace:
    return SimplexSpace([f"s{i}" for i in range(k)], normalization=normalization)


def assert_on_simplex(x: torch.Tensor) -> None:
    assert bool((x >= 0).all())
    assert torch.allclose(x.sum(-1), torch.ones(x.shape[:-1], dtype=x.dtype), atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(k=st.integers(2, 6), n=st.integers(0, 40), q=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_quasi_random_points_lie_on_the_simplex(k: int, n: int, q: int, seed: int) -> None:
    space = space_of(k)
    batches = space.sample_q_batches(n, q, seed)
    assert batches.shape == (n, q, k) and batches.dtype == torch.double
    assert_on_simplex(batches)
    points = space.sobol(n, seed=seed)
    assert points.shape == (n, k)
    assert_on_simplex(points)
    indices, coefficients, rhs = space.equality_constraints[0]
    assert torch.allclose(
        (points[:, indices] * coefficients).sum(-1), torch.full((n,), rhs).double()
    )


def test_sobol_points_are_reproducible_and_extend_as_a_prefix() -> None:
    space = space_of(4)
    assert torch.equal(space.sobol(8, seed=3), space.sobol(8, seed=3))
    assert torch.equal(space.sobol(8, seed=3)[:5], space.sobol(5, seed=3))
    assert not torch.equal(space.sobol(8, seed=3), space.sobol(8, seed=4))
    assert len(set(map(tuple, space.sobol(64, seed=0).tolist()))) == 64


def test_sorted_spacings_by_hand() -> None:
    space = space_of(3)
    w = space.from_unit_cube(torch.tensor([[0.7, 0.2], [0.0, 1.0]], dtype=torch.double))
    expected = torch.tensor([[0.2, 0.5, 0.3], [0.0, 1.0, 0.0]], dtype=torch.double)
    assert torch.allclose(w, expected)


@pytest.mark.parametrize("k", [3, 4])
def test_sobol_points_are_uniform_on_the_simplex(k: int) -> None:
    """Under the uniform (Dirichlet(1)) law each weight is Beta(1, K-1): P(w_j <= t) =
    1 - (1 - t)^(K-1), and E[w_j] = 1/K. Normalising a uniform cube point would fail this."""
    points = space_of(k).sobol(4096, seed=1)
    assert torch.allclose(points.mean(0), torch.full((k,), 1.0 / k, dtype=torch.double), atol=5e-3)
    for t in (0.1, 0.25, 0.5):
        empirical = (points <= t).double().mean(0)
        expected = 1.0 - (1.0 - t) ** (k - 1)
        assert torch.allclose(empirical, torch.full((k,), expected, dtype=torch.double), atol=0.01)
    naive = torch.rand(4096, k, generator=torch.Generator().manual_seed(0), dtype=torch.double)
    naive = naive / naive.sum(-1, keepdim=True)
    assert abs(float((naive[:, 0] <= 0.1).double().mean()) - (1.0 - 0.9 ** (k - 1))) > 0.03


def test_bounds_and_equality_constraint_in_botorch_form() -> None:
    space = space_of(4)
    assert torch.equal(space.bounds, torch.tensor([[0.0] * 4, [1.0] * 4], dtype=torch.double))
    ((indices, coefficients, rhs),) = space.equality_constraints
    assert torch.equal(indices, torch.arange(4))
    assert torch.equal(coefficients, torch.ones(4, dtype=torch.double))
    assert rhs == 1.0


def test_project_removes_small_violations() -> None:
    space = space_of(3)
    x = torch.tensor([[-1e-9, 0.5, 0.5000002], [0.2, 0.2, 0.2]], dtype=torch.double)
    projected = space.project(x)
    assert_on_simplex(projected)
    assert projected[0, 0] == 0.0
    assert torch.allclose(projected[1], torch.full((3,), 1 / 3, dtype=torch.double))
    with pytest.raises(InvalidArgumentError) as raised:
        space.project(torch.tensor([-0.1, 0.0, 0.0]))
    assert raised.value.name == "x"


def test_params_round_trip_in_signal_order() -> None:
    space = SimplexSpace(["sparse", "attention", "kernel_shap"], normalization="abs")
    params = space.to_params(torch.tensor([0.25, 0.7, 0.05], dtype=torch.double))
    assert params.weights == pytest.approx({"sparse": 0.25, "attention": 0.7, "kernel_shap": 0.05})
    assert params.normalization == "abs"
    reordered = ShapingParams(weights={"kernel_shap": 0.05, "sparse": 0.25, "attention": 0.7})
    assert torch.allclose(
        space.to_tensor(reordered), torch.tensor([0.25, 0.7, 0.05], dtype=torch.double)
    )
    with pytest.raises(InvalidArgumentError) as raised:
        space.to_tensor(ShapingParams(weights={"sparse": 0.5, "attention": 0.5}))
    assert raised.value.name == "params"


@pytest.mark.parametrize(
    "signals", [["sparse"], ["sparse", "sparse"], "sparse", ["sparse", ""], ["sparse", 3]]
)
def test_bad_signals_are_refused(signals) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        SimplexSpace(signals)
    assert raised.value.name == "signals"


def test_bad_normalization_and_counts_are_refused() -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        SimplexSpace(["a", "b"], normalization="l2")
    assert raised.value.name == "normalization"
    with pytest.raises(InvalidArgumentError) as raised:
        space_of(3).sample_q_batches(-1, 1, 0)
    assert raised.value.name == "n"
    with pytest.raises(InvalidArgumentError) as raised:
        space_of(3).sample_q_batches(4, 0, 0)
    assert raised.value.name == "q"
