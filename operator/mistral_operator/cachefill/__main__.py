"""`python -m mistral_operator.cachefill ...`: the same as `mistral-operator cachefill ...`."""

from __future__ import annotations

import sys

from mistral_operator.cachefill.main import main

sys.exit(main(["cachefill", *sys.argv[1:]]))
