"""The search space of the outer loop: blend weights on the simplex over named signals."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from tokenshape.errors import InvalidArgumentError
from tokenshape.shaping.params import NORMALIZATIONS, ShapingParams

__all__ = ["SimplexSpace"]


class SimplexSpace:
    """The probability simplex over K named signals, as BoTorch sees it.

    A point is a ``K`` vector ``w`` with ``w_j >= 0`` and ``sum_j w_j = 1``, ordered like
    ``signals``. BoTorch optimises it inside the box ``[0, 1]^K`` (:attr:`bounds`) under the
    equality constraint ``sum_j w_j = 1`` (:attr:`equality_constraints`).

    Quasi-random points come from a scrambled Sobol sequence in ``K - 1`` dimensions mapped onto
    the simplex by sorted spacings: for ``u`` in ``[0, 1]^(K-1)`` sorted as
    ``u_(1) <= ... <= u_(K-1)``, ``w = (u_(1), u_(2) - u_(1), ..., 1 - u_(K-1))``. Spacings of
    uniform order statistics are uniform on the simplex (Dirichlet(1, ..., 1)), so the map keeps
    the Sobol points evenly spread.

    Args:
        signals: the signal names, at least two, without repeats.
        normalization: the normalisation carried by every :class:`ShapingParams` built here.

    Example:
        >>> space = SimplexSpace(["sparse", "attention", "kernel_shap"])
        >>> x = space.sobol(4, seed=0)
        >>> x.shape
        torch.Size([4, 3])
        >>> bool(torch.allclose(x.sum(-1), torch.ones(4, dtype=x.dtype)))
        True
    """

    def __init__(self, signals: Sequence[str], *, normalization: str = "sum") -> None:
        names = list(signals) if not isinstance(signals, str) else None
        if (
            names is None
            or len(names) < 2
            or not all(isinstance(name, str) and name for name in names)
            or len(set(names)) != len(names)
        ):
            raise InvalidArgumentError(
                "signals", signals, "a list of at least two distinct, non-empty signal names"
            )
        if normalization not in NORMALIZATIONS:
            raise InvalidArgumentError("normalization", normalization, f"one of {NORMALIZATIONS}")
        self.signals: tuple[str, ...] = tuple(names)
        self.normalization = normalization

    @property
    def dim(self) -> int:
        """``K``, the number of signals."""
        return len(self.signals)

    @property
    def bounds(self) -> Tensor:
        """A ``2 x K`` double tensor: lower bounds 0, upper bounds 1."""
        return torch.stack(
            [torch.zeros(self.dim, dtype=torch.double), torch.ones(self.dim, dtype=torch.double)]
        )

    @property
    def equality_constraints(self) -> list[tuple[Tensor, Tensor, float]]:
        """``sum_j w_j = 1`` in the form ``optimize_acqf(equality_constraints=...)`` takes.

        One tuple ``(indices, coefficients, rhs)``: indices ``0..K-1`` (a ``K`` long tensor),
        coefficients all one (a ``K`` double tensor) and ``rhs = 1.0``.
        """
        return [
            (torch.arange(self.dim), torch.ones(self.dim, dtype=torch.double), 1.0),
        ]

    def sobol(self, n: int, *, seed: int) -> Tensor:
        """The first ``n`` points of a scrambled Sobol sequence mapped onto the simplex.

        The same ``seed`` gives the same points, and the first ``m`` of ``sobol(n)`` are
        ``sobol(m)``, so a study can be resumed point for point.

        Args:
            n: how many points, >= 0.
            seed: the scrambling seed.

        Returns:
            An ``n x K`` double tensor whose rows lie on the simplex.
        """
        return self.sample_q_batches(n, 1, seed).squeeze(-2)

    def sample_q_batches(self, n: int, q: int, seed: int | None) -> Tensor:
        """``n`` batches of ``q`` quasi-random simplex points.

        Has the signature of the ``generator`` that BoTorch's ``gen_batch_initial_conditions``
        accepts, so ``optimize_acqf`` draws its raw samples with it rather than with its own
        Markov-chain sampler of the constrained polytope.

        Args:
            n: the number of batches, >= 0.
            q: points per batch, >= 1.
            seed: the Sobol scrambling seed (``None``: drawn from torch's global generator).

        Returns:
            An ``n x q x K`` double tensor whose rows lie on the simplex.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidArgumentError("n", n, "an integer >= 0")
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise InvalidArgumentError("q", q, "an integer >= 1")
        if n == 0:
            return torch.empty(0, q, self.dim, dtype=torch.double)
        engine = SobolEngine(dimension=(self.dim - 1) * q, scramble=True, seed=seed)
        uniform = engine.draw(n, dtype=torch.double).view(n, q, self.dim - 1)
        return self.from_unit_cube(uniform)

    def from_unit_cube(self, u: Tensor) -> Tensor:
        """Map points of ``[0, 1]^(K-1)`` onto the simplex by sorted spacings.

        Args:
            u: a ``... x (K-1)`` tensor with entries in ``[0, 1]``.

        Returns:
            A ``... x K`` tensor of the same dtype whose rows lie on the simplex.
        """
        if u.shape[-1] != self.dim - 1:
            raise InvalidArgumentError(
                "u", tuple(u.shape), f"a tensor of shape ... x {self.dim - 1}"
            )
        ordered = u.clamp(0.0, 1.0).sort(dim=-1).values
        zeros = ordered.new_zeros(*ordered.shape[:-1], 1)
        ones = ordered.new_ones(*ordered.shape[:-1], 1)
        return torch.cat([ordered, ones], dim=-1) - torch.cat([zeros, ordered], dim=-1)

    def project(self, x: Tensor) -> Tensor:
        """Remove the small violations an optimiser leaves: clip below at 0, rescale to sum 1.

        Args:
            x: a ``... x K`` tensor of non-negative-ish weights with a positive sum.

        Returns:
            A ``... x K`` tensor whose rows lie on the simplex.
        """
        if x.shape[-1] != self.dim:
            raise InvalidArgumentError("x", tuple(x.shape), f"a tensor of shape ... x {self.dim}")
        clipped = x.clamp_min(0.0)
        total = clipped.sum(dim=-1, keepdim=True)
        if not bool((total > 0).all()):
            raise InvalidArgumentError("x", x.tolist(), "rows with at least one positive weight")
        return clipped / total

    def to_params(self, x: Tensor) -> ShapingParams:
        """The :class:`ShapingParams` of one point.

        Args:
            x: a ``K`` tensor, ordered like :attr:`signals`; projected onto the simplex first.
        """
        if x.dim() != 1:
            raise InvalidArgumentError("x", tuple(x.shape), f"a tensor of shape ({self.dim},)")
        weights = self.project(x).tolist()
        return ShapingParams(
            weights=dict(zip(self.signals, weights, strict=True)),
            normalization=self.normalization,
            normalize=True,
        )

    def to_tensor(self, params: ShapingParams) -> Tensor:
        """The point of a :class:`ShapingParams` with exactly this space's signals.

        Returns:
            A ``K`` double tensor ordered like :attr:`signals`.
        """
        if set(params.weights) != set(self.signals):
            raise InvalidArgumentError(
                "params", params.to_dict(), f"weights over exactly the signals {list(self.signals)}"
            )
        return torch.tensor([params.weights[name] for name in self.signals], dtype=torch.double)
