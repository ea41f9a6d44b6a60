"""The ``tokenshape`` command line: one sub-command per job.

``prepare`` builds the offline models once; ``explain`` shows per-token attributions of a reward
model (the built-in one or the user's); ``train`` runs one inner GRPO run with fixed weights; ``sweep`` runs (or continues) a
Bayesian-optimisation study of the weights and writes its report; ``report`` rewrites a study's
report.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from tokenshape.errors import TokenShapeError
from tokenshape.experiments.interrupts import remembered_interrupts

__all__ = ["build_parser", "main"]


def _add_prepare(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "prepare", help="build and cache the offline models (policy and sentiment reward model)"
    )
    parser.add_argument(
        "--skip-policy", action="store_true", help="build only the sentiment reward model"
    )
    parser.set_defaults(run=_run_prepare)


def _add_explain(commands: argparse._SubParsersAction) -> None:
    from tokenshape.attribution import METHODS

    parser = commands.add_parser(
        "explain",
        help="per-token attributions of a reward model as a terminal heatmap",
        description=(
            "Explain a reward model's score of TEXT (the response) after --prompt, or of each "
            "prompt/response row of --file. Without either, explains a few held-out IMDB review "
            "continuations. The reward model is the built-in sentiment model unless "
            "--reward-model names a sequence classifier folder."
        ),
    )
    parser.add_argument("text", nargs="?", help="the response to explain")
    parser.add_argument(
        "--file",
        default=None,
        help="a JSONL file of rows with 'prompt' and 'response' fields, explained instead of TEXT",
    )
    parser.add_argument(
        "--reward-model",
        default=None,
        metavar="PATH",
        help="a folder holding a sequence classifier and its tokenizer (default: the built-in "
        "MiniLM sentiment model, positive minus negative logit)",
    )
    parser.add_argument(
        "--label", type=int, default=None, help="the logit used as the reward (default 0)"
    )
    parser.add_argument("--minus-label", type=int, default=None, help="a logit subtracted from it")
    parser.add_argument(
        "--prompt", default="", help="the prompt before the response (never masked)"
    )
    parser.add_argument(
        "--method", default="kernel_shap", choices=sorted(METHODS), help="attribution method"
    )
    parser.add_argument("--budget", type=int, default=None, help="forward rows per sequence")
    parser.add_argument(
        "--unit", default="token", choices=("token", "word", "sentence"), help="players"
    )
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument(
        "--examples", type=int, default=3, help="reviews explained when TEXT is absent"
    )
    parser.add_argument(
        "--html", default=None, metavar="FILE", help="also save the heatmap as an HTML page"
    )
    parser.set_defaults(run=_run_explain)


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        default="imdb_positive",
        help="a YAML config file (see README, 'Your own models'), or a built-in config: "
        "imdb_positive (default), tiny",
    )


def _add_train(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="one inner GRPO run with the config's training.weights, scored on held-out prompts",
    )
    _add_config(parser)
    parser.add_argument("--out", default=None, help="run folder (default runs/<name>-train)")
    parser.set_defaults(run=_run_train)


def _add_sweep(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "sweep",
        help="tune the blend weights with Bayesian optimisation; run it again to continue a study",
    )
    _add_config(parser)
    parser.add_argument("--study-dir", default=None, help="study folder (default runs/<name>)")
    parser.set_defaults(run=_run_sweep)


def _add_report(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("report", help="write a study's HTML report with its plots")
    parser.add_argument("study", help="the study folder")
    parser.set_defaults(run=_run_report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="tokenshape",
        description="Dense token-level rewards for RLHF from explained reward models.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_prepare(commands)
    _add_explain(commands)
    _add_train(commands)
    _add_sweep(commands)
    _add_report(commands)
    return parser


def _run_prepare(args: argparse.Namespace, console: Console) -> int:
    from tokenshape.experiments.prepare import prepare

    return prepare(console, skip_policy=args.skip_policy)


def _run_explain(args: argparse.Namespace, console: Console) -> int:
    from tokenshape.experiments.explain import explain

    return explain(args, console)


def _run_train(args: argparse.Namespace, console: Console) -> int:
    from tokenshape.experiments.config import load_config
    from tokenshape.experiments.sources import check_sources
    from tokenshape.experiments.study import run_train

    config = load_config(args.config)
    check_sources(config)
    run_train(config, Path(args.out or f"runs/{config.name}-train"), console)
    return 0


def _run_sweep(args: argparse.Namespace, console: Console) -> int:
    from tokenshape.experiments.config import load_config
    from tokenshape.experiments.report import write_report
    from tokenshape.experiments.sources import check_sources
    from tokenshape.experiments.study import run_sweep

    config = load_config(args.config)
    check_sources(config)
    folder = run_sweep(config, Path(args.study_dir or f"runs/{config.name}"), console)
    console.print(f"report: {write_report(folder).resolve()}")
    return 0


def _run_report(args: argparse.Namespace, console: Console) -> int:
    from tokenshape.experiments.report import write_report

    console.print(f"report: {write_report(args.study).resolve()}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    console = Console()
    try:
        with remembered_interrupts():
            return args.run(args, console)
    except TokenShapeError as error:
        console.print(f"[bold red]error:[/] {error}")
        return 2
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: everything finished so far is saved")
        return 130


if __name__ == "__main__":
    sys.exit(main())
