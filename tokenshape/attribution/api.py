"""``tokenshape.attribute``: the one verb every attribution method shares."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch import Tensor

from tokenshape.attribution.attention import AttentionAttributor
from tokenshape.attribution.base import Attributor
from tokenshape.attribution.exact import ExactShapleyAttributor
from tokenshape.attribution.gradient import GradientAttributor
from tokenshape.attribution.kernel_shap import KernelShapAttributor
from tokenshape.attribution.lime import LimeAttributor
from tokenshape.attribution.lime_library import LimeLibraryAttributor
from tokenshape.attribution.occlusion import OcclusionAttributor
from tokenshape.attribution.odd_surrogate_shap import OddSurrogateShapAttributor
from tokenshape.attribution.prefix import PrefixAttributor
from tokenshape.attribution.shap_library import ShapLibraryAttributor
from tokenshape.errors import InvalidArgumentError
from tokenshape.evaluation import ChunkedEvaluator, default_chunk_rows
from tokenshape.game import RewardGame
from tokenshape.masking import Masking, check_masking, resolve_masking
from tokenshape.reward import RewardFn
from tokenshape.types import TokenAttribution
from tokenshape.units import unit_index

__all__ = ["METHODS", "attribute", "make_attributor", "register_method"]


#: Method name -> a factory of its attributor with default options. The library adapters import
#: ``shap`` and ``lime`` only when they run.
METHODS: dict[str, Callable[[], Attributor]] = {
    "kernel_shap": KernelShapAttributor,
    "odd_surrogate_shap": OddSurrogateShapAttributor,
    "lime": LimeAttributor,
    "exact": ExactShapleyAttributor,
    "occlusion": OcclusionAttributor,
    "attention": AttentionAttributor,
    "prefix": PrefixAttributor,
    "gradient": GradientAttributor,
    "shap_library": ShapLibraryAttributor,
    "lime_library": LimeLibraryAttributor,
}


def register_method(name: str, factory: Callable[[], Attributor]) -> None:
    """Make ``factory()`` available as ``method=name``."""
    if not isinstance(name, str) or not name or name == "sparse":
        raise InvalidArgumentError("name", name, "a non-empty method name other than 'sparse'")
    METHODS[name] = factory


def make_attributor(method: str | Attributor) -> Attributor:
    """The attributor for a method name (default options), or ``method`` itself."""
    if isinstance(method, Attributor):
        return method
    if not isinstance(method, str) or method not in METHODS:
        raise InvalidArgumentError("method", method, f"one of {sorted(METHODS)} or an Attributor")
    return METHODS[method]()


def _check_batch(input_ids: Tensor, attention_mask: Tensor, response_mask: Tensor) -> Tensor:
    """Validate the three ``B x L`` tensors; returns ``response_mask`` as bool."""
    if not isinstance(input_ids, Tensor) or input_ids.ndim != 2 or input_ids.is_floating_point():
        shown = (
            input_ids
            if not isinstance(input_ids, Tensor)
            else f"tensor {tuple(input_ids.shape)} {input_ids.dtype}"
        )
        raise InvalidArgumentError("input_ids", shown, "an integer tensor of shape B x L")
    for name, tensor in (("attention_mask", attention_mask), ("response_mask", response_mask)):
        if not isinstance(tensor, Tensor) or tensor.shape != input_ids.shape:
            shown = tuple(tensor.shape) if isinstance(tensor, Tensor) else tensor
            raise InvalidArgumentError(
                name, shown, f"a tensor of shape {tuple(input_ids.shape)} like input_ids"
            )
    if response_mask.dtype != torch.bool:
        if response_mask.is_floating_point() or not bool(
            ((response_mask == 0) | (response_mask == 1)).all()
        ):
            raise InvalidArgumentError(
                "response_mask",
                f"values {response_mask.unique()[:5].tolist()}",
                "bool or 0/1 values",
            )
        response_mask = response_mask.bool()
    outside = response_mask & ~attention_mask.bool()
    if bool(outside.any()):
        rows = outside.any(dim=1).nonzero().flatten().tolist()
        raise InvalidArgumentError(
            "response_mask",
            f"marks padded positions in rows {rows[:5]}",
            "response tokens inside the attended sequence",
        )
    empty = (~response_mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise InvalidArgumentError(
            "response_mask",
            f"no response token in rows {empty[:5]}",
            "at least one response token per row",
        )
    return response_mask


def _check_budget(attributor: Attributor, budget: int | None) -> int | None:
    if budget is None:
        return attributor.default_budget
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 2:
        raise InvalidArgumentError(
            "budget",
            budget,
            "an int >= 2 (forward rows per sequence, the full and empty ones included)",
        )
    return budget


def _without_special_tokens(input_ids: Tensor, response_mask: Tensor, tokenizer) -> Tensor:
    """``response_mask`` less the tokenizer's special tokens (its unknown token excepted: it stands
    for text), with a warning when some were marked (TRL's completion mask includes EOS)."""
    if tokenizer is None:
        return response_mask
    unk = getattr(tokenizer, "unk_token_id", None)
    special = [int(t) for t in getattr(tokenizer, "all_special_ids", []) if t != unk]
    if not special:
        return response_mask
    marked = response_mask & torch.isin(input_ids, torch.tensor(special, device=input_ids.device))
    if bool(marked.any()):
        warnings.warn(
            f"response_mask marks {int(marked.sum())} special tokens (e.g. end of sequence); they "
            "are not players and stay in place (an end-of-sequence token is often where the "
            "reward model reads the row)",
            stacklevel=3,
        )
    return response_mask & ~marked


def _check_removable(masking: Masking, attention_mask: Tensor, index: Tensor) -> None:
    """With removal, every row must keep a token when all its units are removed."""
    if not masking.remove:
        return
    empty = (~(attention_mask.bool() & (index < 0)).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise InvalidArgumentError(
            "masking",
            "remove",
            f"rows that keep a token outside the players (a prompt or special token) when every "
            f"unit is removed, but rows {empty[:5]} would be empty; add the prompt or the "
            "tokenizer's special tokens, or use a replacement token",
        )


def _spread_to_tokens(unit_scores: list[Tensor], index: Tensor) -> Tensor:
    """Token scores ``B x L``: each unit's score shared equally by its tokens, 0 off the units."""
    scores = torch.zeros(index.shape, dtype=torch.float64, device=index.device)
    for b, phi in enumerate(unit_scores):
        on = index[b] >= 0
        units = index[b, on]
        sizes = torch.bincount(units, minlength=phi.shape[0]).to(torch.float64)
        scores[b, on] = phi.to(index.device)[units] / sizes[units]
    return scores


def attribute(
    reward_fn: RewardFn,
    input_ids: Tensor,
    attention_mask: Tensor,
    response_mask: Tensor,
    *,
    method: str | Attributor = "kernel_shap",
    budget: int | None = None,
    seed: int = 0,
    unit: str | Tensor = "token",
    masking: str | int = "auto",
    tokenizer=None,
    max_rows: int | None = None,
    max_tokens: int | None = None,
) -> TokenAttribution:
    """Explain the reward of each sequence as per-token attributions.

    Args:
        reward_fn: ``(input_ids B x L, attention_mask B x L) -> B``; its ``.tokenizer`` and
            ``.device`` are used when present.
        input_ids: ``B x L`` prompt and response tokens, as the reward model reads them.
        attention_mask: ``B x L``.
        response_mask: ``B x L`` bool, True on the response tokens (the players); the prompt is
            never masked. Special tokens (but the unknown token) are left out of the players,
            with a warning.
        method: a name from :data:`METHODS` or an :class:`Attributor` with custom options.
        budget: forward rows per sequence, the full and empty coalitions included (>= 2). None
            takes the method's default; ``exact``, ``occlusion``, ``attention``, ``prefix`` and
            ``gradient`` need a fixed number of rows (2^M, M+2, 1, 1 or M+1, 3) and ignore it.
        seed: the same seed gives the same result; each sequence draws from its own generator.
        unit: ``"token"``, ``"word"``, ``"sentence"`` or a ``LongTensor[B, L]`` of unit numbers
            (e.g. chat turns; -1 off the players).
        masking: ``"auto"`` (the tokenizer's mask token, else unk, else pad; see
            :mod:`tokenshape.masking`), ``"mask"``, ``"unk"``, ``"pad"``, a token id, or
            ``"remove"`` to delete hidden units and re-pack the row (a different game). A
            replacement the model reads as padding (a decoder classifier's pad token, from the
            reward's ``padding_token_ids``) is refused.
        tokenizer: the reward model's tokenizer, when ``reward_fn`` has none.
        max_rows: rows per forward at most (default 16 on CPU, 512 on CUDA).
        max_tokens: rows x columns per forward at most (default: no bound).

    Returns:
        :class:`TokenAttribution` with ``scores`` ``B x L`` (float32, zero outside the response),
        ``base_value`` and ``full_value`` ``B``, and the forward ``rows`` per sequence, on the
        reward model's device.
    """
    attributor = make_attributor(method)
    response_mask = _check_batch(input_ids, attention_mask, response_mask)
    budget = _check_budget(attributor, budget)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InvalidArgumentError("seed", seed, "an int")
    tokenizer = tokenizer if tokenizer is not None else getattr(reward_fn, "tokenizer", None)
    device = torch.device(getattr(reward_fn, "device", input_ids.device))
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    response_mask = _without_special_tokens(input_ids, response_mask.to(device), tokenizer)
    index, n_units = unit_index(unit, input_ids, response_mask, tokenizer=tokenizer)
    no_players = (n_units == 0).nonzero().flatten().tolist()
    if no_players:
        raise InvalidArgumentError(
            "unit", f"no unit in rows {no_players[:5]}", "at least one unit (player) per row"
        )
    if attributor.max_units is not None and int(n_units.max()) > attributor.max_units:
        raise InvalidArgumentError(
            "method",
            attributor.name,
            f"at most {attributor.max_units} units per sequence (got {int(n_units.max())}); use kernel_shap",
        )
    evaluator = ChunkedEvaluator(
        reward_fn,
        max_rows=max_rows if max_rows is not None else default_chunk_rows(device),
        max_tokens=max_tokens,
        name=getattr(reward_fn, "__name__", "reward_fn"),
    )
    if attributor.uses_masking:
        padding_ids = getattr(reward_fn, "padding_token_ids", ())
        masking_rule = resolve_masking(masking, tokenizer, padding_ids=padding_ids)
        _check_removable(masking_rule, attention_mask, index)
    else:  # no coalition is evaluated: nothing is hidden, no replacement token is needed
        check_masking(masking)
        masking_rule = Masking(remove=False, token_id=None)
    game = RewardGame(input_ids, attention_mask, index, n_units, masking_rule, evaluator)
    result = attributor.attribute_game(game, budget=budget, seed=seed)
    return TokenAttribution(
        scores=_spread_to_tokens(result.unit_scores, index).float(),
        base_value=result.base_value.to(device),
        full_value=result.full_value.to(device),
        method=attributor.name,
        rows=result.rows,
        unit_scores=[phi.to(device) for phi in result.unit_scores],
        unit_index=index,
        input_ids=input_ids,
        response_mask=response_mask,
        tokenizer=tokenizer,
    )
