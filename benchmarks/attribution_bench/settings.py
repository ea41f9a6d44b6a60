"""What an attribution benchmark run measures: :data:`FULL` and :data:`QUICK` are the presets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    """What the run measures; :data:`FULL` and :data:`QUICK` are the two presets."""

    prompt_tokens: int = 32
    response_tokens: tuple[int, ...] = (64, 128)
    #: Sequences explained per (response length, method, budget) in the timing part, at most
    #: ``timing_row_cap // budget`` of them (at least one).
    timing_sequences: tuple[tuple[int, int], ...] = ((64, 3), (128, 2))
    timing_row_cap: int = 1024
    budgets: tuple[int, ...] = (64, 256, 1024)
    batch_sequences: int = 32
    batch_response_tokens: int = 64
    batch_budget: int = 256
    batch_methods: tuple[str, ...] = (
        "tokenshape.kernel_shap",
        "tokenshape.occlusion",
        "tokenshape.attention",
    )
    fidelity_reviews: int = 10
    fidelity_tokens: int = 12
    #: Runs per review in the sweep, each with its own seed (the sweep costs no model time).
    fidelity_seeds: int = 5
    sweep_budgets: tuple[int, ...] = (
        24,
        32,
        48,
        64,
        96,
        128,
        192,
        256,
        384,
        512,
        768,
        1024,
        1536,
        2048,
    )
    #: Smooth nonlinear games with pairwise and three-way interactions
    #: (:func:`attribution_bench.lookup_games.smooth_interaction_values`): players, games, the
    #: budgets swept, runs per game and budget.
    smooth_players: int = 14
    smooth_games: int = 10
    smooth_budgets: tuple[int, ...] = (64, 96, 128, 192, 256, 384, 512)
    smooth_seeds: int = 3
    target_smooth_budget: int = 256
    #: Response tokens and budgets of the numpy game on which the estimators run in their own
    #: environment (shapiq >= 1.5) time themselves.
    overhead_tokens: tuple[int, ...] = (64, 128)
    floor_batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    #: Rows timed per batch size (rounded up to whole batches) and how often; the median is kept.
    floor_rows: int = 128
    floor_repeats: int = 3
    #: Extra widths (tokens per row) timed at the best batch size, for the deletion game's rows.
    floor_width_step: int = 16
    target_rel_l2: float = 0.05
    target_floor_ratio: float = 1.05
    target_pearson: float = 0.99
    target_pearson_budget: int = 256

    def sequences_for(self, response_tokens: int, budget: int | None = None) -> int:
        count = dict(self.timing_sequences)[response_tokens]
        return count if budget is None else max(1, min(count, self.timing_row_cap // budget))


FULL = Settings()
QUICK = Settings(
    response_tokens=(16,),
    timing_sequences=((16, 1),),
    budgets=(64,),
    batch_sequences=4,
    batch_response_tokens=16,
    batch_budget=64,
    fidelity_reviews=2,
    fidelity_tokens=8,
    fidelity_seeds=2,
    sweep_budgets=(24, 64, 128),
    smooth_players=8,
    smooth_games=2,
    smooth_budgets=(24, 64),
    smooth_seeds=1,
    target_smooth_budget=64,
    overhead_tokens=(16,),
    floor_batch_sizes=(4, 16),
    floor_rows=32,
    floor_repeats=1,
    floor_width_step=32,
    target_pearson_budget=64,
)
CUDA_BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
