"""The ``mrface`` command line: ``mrface info`` plus the subcommands each area registers.

An area adds a subcommand by providing a module with ``register(subparsers)`` that adds its parser
and sets ``func`` (called with the parsed namespace, returning an exit code) and listing it in
:data:`SUBCOMMAND_MODULES`. A command raises :class:`mrface.errors.UserError` (or a ``ValueError`` /
``FileNotFoundError``) for input it cannot use; :func:`main` prints it as one line, exit code 2.
Modules are imported only when present, so a missing optional dependency of one area never breaks
the others.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import platform
import sys

# name -> module providing register(subparsers); imported lazily.
SUBCOMMAND_MODULES = {
    "data": "mrface.data.cli",
    "demo": "mrface.training.demo",
    "train": "mrface.training.cli",
    "eval": "mrface.eval.cli",
    "embed": "mrface.eval.embed_cli",  # registers embed and search
    "export": "mrface.export.cli",
    "bench": "mrface.bench.cli",
}


def info_lines() -> list[str]:
    """Versions, compiled backends and visible GPUs, one 'key: value' per line."""
    import torch

    import mrface
    from mrface.ops import available_backends, build_info
    from mrface.versions import package_version

    lines = [
        f"mrface: {mrface.__version__}",
        f"python: {platform.python_version()} ({platform.machine()})",
        f"torch: {torch.__version__} (CUDA runtime {torch.version.cuda or 'none'})",
    ]
    lines += [f"{pkg}: {package_version(pkg)}" for pkg in ("triton", "onnx", "onnxruntime", "tensorrt", "faiss-cpu")]
    info = build_info()
    if info:
        cuda = f"yes (archs {info['cuda_archs']}, nvcc {info['cuda_version']})" if info["cuda"] else "no"
        lines.append(
            f"mrface._C: compiled with {info['compiler']}; OpenMP {'yes' if info['openmp'] else 'no'}; "
            f"CUDA kernels {cuda}"
        )
    else:
        lines.append("mrface._C: NOT BUILT (reinstall with `pip install .`; only reference backends run)")
    lines.append(f"backends available: {', '.join(available_backends())}")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"gpu {i}: {p.name}, {p.total_memory / 2**30:.1f} GiB, sm_{p.major}{p.minor}")
    else:
        lines.append("gpus: none visible")
    return lines


def _cmd_info(args: argparse.Namespace) -> int:
    print("\n".join(info_lines()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mrface", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    info = subparsers.add_parser("info", help="versions, compiled backends and visible GPUs")
    info.set_defaults(func=_cmd_info)
    for module_name in SUBCOMMAND_MODULES.values():
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; expected failures end in one ``mrface <cmd>: error: ...`` line, exit code 2
    (``--debug`` anywhere on the command line shows the traceback instead)."""
    from mrface.errors import debug_requested, run_command

    debug, argv = debug_requested(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
    args.debug = debug
    return run_command(args.command, lambda: args.func(args), debug)


if __name__ == "__main__":
    sys.exit(main())
