"""Command-line entry point: `mistral-operator <command>`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from mistral_operator import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mistral-operator",
        description=(
            "Kubernetes operator that turns a MistralModel resource into node-pinned "
            "SGLang replica groups on GPU nodes."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the operator version and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
