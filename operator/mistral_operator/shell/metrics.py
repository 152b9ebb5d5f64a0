"""The operator's own Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "mistral_operator_reconciles_total",
    "Reconciles of MistralModel resources, by result.",
    ["result"],
)
RECONCILE_SECONDS = Histogram(
    "mistral_operator_reconcile_duration_seconds",
    "Time one reconcile of a MistralModel takes.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
GROUPS = Gauge(
    "mistral_operator_replica_groups",
    "Replica groups by model and state.",
    ["namespace", "model", "state"],
)
API_WRITES = Counter(
    "mistral_operator_api_requests_total",
    "Writes the operator made to the Kubernetes API, by verb and kind.",
    ["verb", "kind"],
)
API_ERRORS = Counter(
    "mistral_operator_api_errors_total",
    "Transient Kubernetes API errors that were retried, by exception type.",
    ["reason"],
)


def serve(port: int, addr: str = "0.0.0.0") -> None:  # noqa: S104 - scraped from outside the pod
    """Expose /metrics on ``addr:port`` from a background thread."""
    start_http_server(port, addr=addr)
