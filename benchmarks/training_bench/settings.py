"""What a training-step benchmark run measures: the configurations, the models, the presets."""

from __future__ import annotations

from dataclasses import dataclass

SEED = 0
TARGET_RATIO = 1.5
TARGET_CONFIG = "kernel_shap@64"
TARGET_MODEL = "smollm2"


@dataclass(frozen=True)
class RunConfig:
    """One trainer configuration: vanilla (signal None) or shaped with one signal + sparse."""

    name: str
    signal: str | None = None
    budget: int | None = None

    @property
    def shaped(self) -> bool:
        return self.signal is not None


CONFIGS = (
    RunConfig("vanilla"),
    RunConfig("kernel_shap@64", "kernel_shap", 64),
    RunConfig("kernel_shap@128", "kernel_shap", 128),
    RunConfig("lime@64", "lime", 64),
    RunConfig("attention", "attention", None),
    RunConfig("amortized@64", "amortized", 64),
    RunConfig("vanilla (again)"),
)
#: The ratios' denominator: both vanilla runs' steps together.
BASELINE = "vanilla (both runs)"
MODELS = ("smollm2", "tiny")


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = MODELS
    timed_steps: tuple[tuple[str, int], ...] = (("smollm2", 10), ("tiny", 12))
    warmup_steps: int = 1
    batch_size: int = 8
    num_generations: int = 4
    max_completion_length: int = 24
    prompt_tokens: int = 8
    learning_rate: float = 1e-5
    temperature: float = 1.0

    def steps_for(self, model: str) -> int:
        return dict(self.timed_steps)[model]


FULL = Settings()
QUICK = Settings(models=("tiny",), timed_steps=(("smollm2", 1), ("tiny", 1)))
#: A step counts as clean when other processes kept fewer cores than this busy during it.
CLEAN_OTHER_CORES = 0.25
