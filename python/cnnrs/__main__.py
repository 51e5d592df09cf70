"""``python -m cnnrs`` and the ``cnnrs`` console script.

Subcommands
-----------
demo
    Runs the whole study headless and writes figures and reports to a folder
    (see :mod:`cnnrs.demo`): ``cnnrs demo [--dataset digits|cifar10] [--epochs N]
    [--out DIR] [--device auto|cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The ``cnnrs`` argument parser with its subcommands."""
    from . import demo

    parser = argparse.ArgumentParser(
        prog="cnnrs",
        description="cnnrs: convolution and pooling from scratch, and CNNs on libtorch.",
    )
    parser.add_argument("--version", action="store_true", help="print the versions and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo_parser = commands.add_parser(
        "demo",
        help="run the study headless: figures, report.md and report.json in a folder",
        description="Runs the study headless. Section 1: padding, convolution and pooling "
        "on a photo with the study's kernels. Section 2: 5-fold cross-validation of the "
        "CNN architectures, a grid search over architecture × epochs × learning rate, and "
        "the refitted best model on the test set. Writes PNG figures, report.md and "
        "report.json to --out.",
    )
    demo.add_arguments(demo_parser)
    demo_parser.set_defaults(func=demo.command, _parser=demo_parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parses ``argv`` (default ``sys.argv[1:]``) and runs the command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from ._core import __version__, torch_version

        print(f"cnnrs {__version__} (libtorch {torch_version()})")
        return 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("cnnrs: error: a command is required (try: cnnrs demo)", file=sys.stderr)
        return 2
    try:
        return int(args.func(args, getattr(args, "_parser", parser)))
    except KeyboardInterrupt:
        print("\ncnnrs: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
