"""``mrface train RECIPE [key=value ...] [--nproc N]`` and ``python -m mrface.training`` (torchrun).

Single process by default; ``--nproc N`` re-launches the same command under
``torchrun --nproc_per_node N`` (one node). For several nodes call torchrun yourself::

    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 -m mrface.training RECIPE key=value ...
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from mrface.training.config import list_recipes

EPILOG = "recipes: " + ", ".join(list_recipes())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="recipe name (see below) or path to a YAML file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=0.05 train.max_steps=100")
    parser.add_argument("--nproc", type=int, default=1, help="processes on this machine (launches torchrun)")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="train a model from a recipe", description=__doc__.splitlines()[0], epilog=EPILOG
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; bad recipes, data and paths end in one ``mrface train: error: ...`` line (exit 2, also in
    train.log), a non-finite run in one such line with exit 1, tracebacks only with ``--debug``."""
    from mrface.errors import run_command

    if args.nproc < 1:
        print(f"mrface train: error: --nproc: expected an integer >= 1, got {args.nproc}", file=sys.stderr)
        return 2
    if args.nproc > 1:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={args.nproc}",
            "-m",
            "mrface.training",
            args.recipe,
            *args.overrides,
            *(["--debug"] if args.debug else []),
        ]
        return subprocess.call(cmd)
    return run_command("train", lambda: _train(args), getattr(args, "debug", False))


def _train(args: argparse.Namespace) -> int:
    from mrface.training.config import load_recipe
    from mrface.training.trainer import INTERRUPTED_EXIT_CODE, NonFiniteLossError, train

    cfg = load_recipe(args.recipe, args.overrides)
    try:
        result = train(cfg)
    except NonFiniteLossError as err:
        if getattr(args, "debug", False):
            raise
        print(f"mrface train: error: {err}", file=sys.stderr)
        return 1
    finally:
        from mrface.training.distributed import shutdown_if_initialised

        shutdown_if_initialised()
    return INTERRUPTED_EXIT_CODE if result.interrupted else 0


def main(argv: list[str] | None = None) -> int:
    from mrface.errors import debug_requested

    parser = argparse.ArgumentParser(
        prog="python -m mrface.training", description=__doc__.splitlines()[0], epilog=EPILOG
    )
    add_arguments(parser)
    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    args = parser.parse_args(argv)
    args.debug = debug
    return run(args)
