"""Reading SGLang's Prometheus metrics: the requests a leader still has to finish."""

from __future__ import annotations

LOAD_METRICS = ("sglang:num_running_reqs", "sglang:num_queue_reqs")


def requests_in_flight(text: str) -> int | None:
    """Running plus queued requests, summed over every label set of both gauges.

    None when the text has neither gauge (metrics turned off, or not SGLang): the
    caller cannot tell an idle server from one it cannot read.
    """
    total = 0.0
    seen = False
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, rest = line.partition("{") if "{" in line else line.partition(" ")
        if name.strip() not in LOAD_METRICS:
            continue
        value = rest.rsplit("}", 1)[-1].split()
        try:
            total += float(value[0])
        except (IndexError, ValueError):
            continue
        seen = True
    return round(total) if seen else None
