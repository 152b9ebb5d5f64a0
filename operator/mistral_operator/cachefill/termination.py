"""Writing the termination log (`--termination-log PATH`) as the program exits."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("mistral_operator.cachefill")


def write(path: str | None, text: str) -> None:
    """Replace what path holds with text; a failure is logged, never raised.

    One write of the whole text: the kubelet reads the file once the container ends.
    """
    if not path:
        return
    data = text.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    except OSError as exc:
        log.warning("cannot write the termination log %s: %s", Path(path), exc)
