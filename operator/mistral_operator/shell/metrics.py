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


# The autoscaler's view, per model.
QUEUE_DEPTH = Gauge(
    "mistral_operator_queue_requests",
    "Requests waiting or running at a model's serving groups (sglang:num_queue_reqs + "
    "sglang:num_running_reqs), as last read.",
    ["namespace", "model"],
)
DESIRED_GROUPS = Gauge(
    "mistral_operator_desired_groups",
    "Replica groups the operator converges to (the autoscaler's decision when enabled).",
    ["namespace", "model"],
)
CURRENT_GROUPS = Gauge(
    "mistral_operator_current_groups",
    "Replica groups that exist (starting, serving or draining).",
    ["namespace", "model"],
)
SCALE_EVENTS = Counter(
    "mistral_operator_scale_events_total",
    "Decisions of the built-in autoscaler that changed the group count, by direction.",
    ["namespace", "model", "direction"],
)
SCRAPE_ERRORS = Counter(
    "mistral_operator_metrics_scrape_errors_total",
    "Pods of serving or draining groups whose SGLang /metrics could not be read.",
    ["namespace", "model"],
)
SCRAPE_SECONDS = Histogram(
    "mistral_operator_metrics_scrape_duration_seconds",
    "Time to read /metrics from every pod of a model's groups (in parallel).",
    ["namespace", "model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
