"""The error a spec that passed the schema can still raise in planning: it names the field."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec the operator cannot turn into pods, with the field to fix and the reason."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.reason = message
        super().__init__(f"{field}: {message}")
