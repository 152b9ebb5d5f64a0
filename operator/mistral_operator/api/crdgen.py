"""Writes (or checks) the CRD manifest under crds/: `python -m mistral_operator.api.crdgen`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from mistral_operator.api import names
from mistral_operator.api.crd import custom_resource_definition

HEADER = (
    "# Generated from the pydantic models in operator/mistral_operator/api by\n"
    "# `python -m mistral_operator.api.crdgen`. Do not edit by hand.\n"
)


def render_crd() -> str:
    """The CRD manifest as YAML text, byte-for-byte what is committed under crds/."""
    body = yaml.safe_dump(
        custom_resource_definition(), sort_keys=False, width=100, allow_unicode=True
    )
    return HEADER + body


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mistral_operator.api.crdgen",
        description="Generate the MistralModel CRD from the API models.",
    )
    parser.add_argument(
        "--output-dir", default="crds", help="directory to write the CRD into (default: crds)"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 when the file on disk differs from the generated CRD",
    )
    args = parser.parse_args(argv)
    path = Path(args.output_dir) / names.CRD_FILENAME
    text = render_crd()
    if args.check:
        current = path.read_text() if path.exists() else ""
        if current != text:
            print(
                f"{path} is out of date; run python -m mistral_operator.api.crdgen", file=sys.stderr
            )
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
