"""How busy a draining group's leader still is, read from its /metrics."""

from __future__ import annotations

import logging
import urllib.error
import urllib.request

from mistral_operator.core import labels as L  # noqa: N812 - short, read everywhere here
from mistral_operator.core.sglang_metrics import requests_in_flight

log = logging.getLogger(__name__)
TIMEOUT_SECONDS = 2.0
# Straight to the pod: a proxy from the environment has no route to pod IPs.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def in_flight(ip: str, port: int = L.SGLANG_PORT, timeout: float = TIMEOUT_SECONDS) -> int | None:
    """Requests the leader at ``ip`` still runs or queues; None when that is unknown.

    Nothing listening (connection refused) is 0: no server, no request in flight. A
    timeout or an HTTP error is unknown, and the drain waits for its timeout.
    """
    url = f"http://{ip}:{port}/metrics"
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", "replace")
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, ConnectionRefusedError):
            return 0
        log.debug("no metrics from %s: %s", url, exc)
        return None
    except (OSError, ValueError) as exc:
        log.debug("no metrics from %s: %s", url, exc)
        return None
    return requests_in_flight(text)
