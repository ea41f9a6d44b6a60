"""Reward along a run against KL and compute, read at matched levels and compared by seed.

A run's path starts at the starting policy (KL 0, no compute, its held-out reward) and goes
through its held-out checkpoints. :func:`reward_at` reads the held-out reward at a level of one
axis by linear interpolation between the two checkpoints around it; a run that never reaches the
level has no value there, it is never extrapolated.

Along KL the checkpoints' estimates are first made non-decreasing (:func:`kl_path`): each is a
Monte Carlo estimate whose standard error (0.03-0.08 nats with 64 held-out completions here) is
as large as the movement between checkpoints early in a run, so the raw estimates cross a level
by noise, go below 0 and come back. The true KL to the starting policy along a run of small
policy-gradient steps grows; the least-squares non-decreasing fit (isotonic regression) is the
estimate that respects that, and checkpoints it cannot tell apart share one point.

Conditions are compared with the reference condition seed by seed (same seed, same prompts and
data order), with percentile-bootstrap 95% intervals over seeds.

:func:`best_at` reads a family of reference runs (sparse GRPO at several learning rates) as one
frontier: at each level, the member with the highest mean reward over seeds among those that
reach the level on every seed. Choosing the best of several noisy members favours the reference,
so a condition that beats it does so against a tuned baseline.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression

from tokenshape.errors import InvalidArgumentError

__all__ = [
    "AXES",
    "Interval",
    "best_at",
    "bootstrap_mean",
    "kl_path",
    "levels_up_to",
    "matched_levels",
    "path",
    "reach",
    "reward_at",
]

#: The axes a run is read along: label and how a checkpoint's value is computed.
AXES = {
    "kl": "KL to the starting policy (nats per completion)",
    "wall_seconds": "training wall-clock seconds",
    "compute": "reward-model rows + policy tokens generated",
}

_BOOTSTRAP_SAMPLES = 10_000


def _value(checkpoint: dict, axis: str) -> float:
    if axis == "compute":
        return float(checkpoint["reward_rows"] + checkpoint["policy_tokens"])
    return float(checkpoint[axis])


def kl_path(
    start_reward: float, kls: Sequence[float], rewards: Sequence[float]
) -> list[tuple[float, float]]:
    """``(KL, reward)`` from the starting policy ``(0, start_reward)`` through the checkpoints,
    their KL estimates replaced by the closest non-decreasing values >= 0 in least squares.

    Consecutive checkpoints given the same KL are one point with their mean reward; those given
    KL 0 are dropped (the starting policy's own reward is the reading there).

    >>> kl_path(1.0, [0.2, -0.1, 0.4], [2.0, 3.0, 4.0])
    [(0.0, 1.0), (0.05, 2.5), (0.4, 4.0)]
    """
    fitted = IsotonicRegression(y_min=0.0).fit_transform(np.arange(len(kls)), np.asarray(kls))
    points = [(0.0, float(start_reward))]
    for kl, group in itertools.groupby(zip(fitted.round(12), rewards), key=lambda p: p[0]):
        group_rewards = [reward for _, reward in group]
        points.append((float(kl), float(np.mean(group_rewards))))
    if len(points) > 1 and points[1][0] == 0.0:  # checkpoints no different from the start
        points[1:2] = []
    return points


def path(run: dict, axis: str) -> list[tuple[float, float]]:
    """``(x, held-out reward)`` from the starting policy through the run's checkpoints (along
    KL, the non-decreasing :func:`kl_path`)."""
    if axis not in AXES:
        raise InvalidArgumentError("axis", axis, f"one of {sorted(AXES)}")
    rewards = [float(c["reward_mean"]) for c in run["checkpoints"]]
    if axis == "kl":
        return kl_path(run["start_reward"], [c["kl"] for c in run["checkpoints"]], rewards)
    points = [(0.0, float(run["start_reward"]))]
    points += [(_value(c, axis), reward) for c, reward in zip(run["checkpoints"], rewards)]
    return points


def reward_at(points: Sequence[tuple[float, float]], level: float) -> float | None:
    """The reward where the path first reaches ``level``, interpolated; ``None`` if never."""
    if level <= points[0][0]:
        return points[0][1]
    for (x_a, y_a), (x_b, y_b) in itertools.pairwise(points):
        if x_b >= level > x_a:
            return y_a + (level - x_a) / (x_b - x_a) * (y_b - y_a)
    return None


def reach(runs: Sequence[dict], axis: str) -> float:
    """How far a condition's runs go along ``axis``: the median over seeds of the final value."""
    return float(np.median([path(run, axis)[-1][0] for run in runs]))


def levels_up_to(top: float, count: int = 3) -> list[float]:
    """``count`` evenly spaced levels ending at ``top`` (for 3: a third, two thirds, all)."""
    if not top > 0:
        return []
    return [top * (i + 1) / count for i in range(count - 1)] + [top]


def matched_levels(runs_by_condition: dict[str, list[dict]], axis: str, count: int = 3):
    """``count`` levels every condition reaches on most seeds.

    The top level is the smallest, over conditions, of :func:`reach`; the others divide it evenly.
    """
    return levels_up_to(min(reach(runs, axis) for runs in runs_by_condition.values()), count)


def best_at(family: dict[str, list[dict]], axis: str, level: float) -> str | None:
    """The member of ``family`` with the highest mean reward at ``level`` over its seeds.

    Only members whose every seed reaches the level compete; ``None`` when none does.
    """
    means = {}
    for name, runs in family.items():
        values = [reward_at(path(run, axis), level) for run in runs]
        if values and all(v is not None for v in values):
            means[name] = float(np.mean(values))
    return max(means, key=means.get) if means else None


@dataclass(frozen=True)
class Interval:
    """A mean over seeds with its percentile-bootstrap 95% interval.

    Attributes:
        mean: the mean over the seeds that have a value.
        low, high: the 2.5% and 97.5% percentiles of the bootstrap means.
        n: seeds with a value; ``total``: seeds in all.
    """

    mean: float
    low: float
    high: float
    n: int
    total: int

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return f"not reached (0/{self.total})"
        reached = "" if self.n == self.total else f", {self.n}/{self.total} seeds"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]{reached}"


def bootstrap_mean(values: Sequence[float | None], *, seed: int = 0) -> Interval:
    """Mean of the values that are not ``None``, with a percentile-bootstrap 95% interval.

    Seeds are resampled with replacement (:data:`_BOOTSTRAP_SAMPLES` times, a fixed generator,
    so the interval is reproducible). With one value the interval is that value.
    """
    present = np.array([v for v in values if v is not None], dtype=float)
    if len(present) == 0:
        return Interval(math.nan, math.nan, math.nan, 0, len(values))
    generator = np.random.default_rng(seed)
    draws = generator.integers(0, len(present), size=(_BOOTSTRAP_SAMPLES, len(present)))
    means = present[draws].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Interval(float(present.mean()), float(low), float(high), len(present), len(values))
