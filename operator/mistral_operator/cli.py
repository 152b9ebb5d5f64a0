"""Command-line entry point: `mistral-operator <command>`."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from mistral_operator import __version__
from mistral_operator.cachefill import clean as cacheclean
from mistral_operator.cachefill import main as cachefill

if TYPE_CHECKING:
    from mistral_operator.shell.webhook import WebhookOptions


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
    crds = sub.add_parser("crds", help="write (or --check) the CRD generated from the API models")
    crds.add_argument("--output-dir", default="crds", help="directory to write the CRD into")
    crds.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    add_sizing_parser(sub)
    cachefill.add_parser(sub)
    cacheclean.add_parser(sub)
    run = sub.add_parser("run", help="run the operator (in a pod, or with a kubeconfig)")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus /metrics port")
    run.add_argument(
        "--health-port", type=int, default=8081, help="liveness endpoint port (/healthz)"
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="run without peering (no other operator replica coordinates with this one)",
    )
    run.add_argument("--peering-name", default="mistral-operator", help="Kopf peering object")
    run.add_argument(
        "--peering-lifetime-seconds",
        type=_peering_lifetime,
        default=15,
        help=(
            "how long a replica's peering record counts as alive (at least 10): a killed "
            "active replica is replaced by a standby within about this long; each replica "
            "renews its record 5-10 s before it runs out"
        ),
    )
    run.add_argument(
        "--priority",
        type=int,
        default=None,
        help="peering priority; default: random, so exactly one replica is the highest",
    )
    run.add_argument(
        "--node-grace-seconds",
        type=float,
        default=40.0,
        help="how long a node may be NotReady before its groups are recreated elsewhere",
    )
    run.add_argument(
        "--drift-interval-seconds",
        type=float,
        default=60.0,
        help=(
            "how often each model is reconciled when nothing happens; events and the "
            "operator's own deadlines (backoffs, grace periods) trigger reconciles at once"
        ),
    )
    run.add_argument(
        "--cache-fill-image",
        default=os.environ.get("MISTRAL_OPERATOR_IMAGE", "mistral-operator:latest"),
        help=(
            "image of the cache-fill Jobs: this operator's own image, which holds "
            "`mistral-operator cachefill` (default: $MISTRAL_OPERATOR_IMAGE)"
        ),
    )
    run.add_argument(
        "--cache-verify-after-seconds",
        type=int,
        default=120,
        help=(
            "a pod still ContainerCreating this long on a node whose weight cache is Ready "
            "gets that cache checked again by a fill (a wiped disk refills)"
        ),
    )
    run.add_argument(
        "--cache-fill-progress-seconds",
        type=int,
        default=10,
        help="how often a fill logs its progress, and the operator reports it in status.cache",
    )
    run.add_argument(
        "--cache-gc-retention-seconds",
        type=float,
        default=86400.0,
        help="how long a cache key no model or pod uses stays on a node before removal",
    )
    run.add_argument(
        "--cache-disk-watermark",
        type=_fraction,
        default=0.85,
        help=(
            "fraction of a node's cache disk in use above which unused keys are removed "
            "oldest first, before their retention ends"
        ),
    )
    run.add_argument(
        "--cache-gc-namespace",
        default=os.environ.get("POD_NAMESPACE") or "default",
        help="namespace of the cache GC Jobs (default: $POD_NAMESPACE, else default)",
    )
    run.add_argument(
        "--cache-gc-interval-seconds",
        type=float,
        default=60.0,
        help="seconds between cache garbage collection rounds",
    )
    add_webhook_arguments(run)
    run.add_argument("--log-format", choices=["plain", "json"], default="json")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def add_webhook_arguments(run: argparse.ArgumentParser) -> None:
    webhook = run.add_argument_group("validating webhook (docs/admission.md)")
    webhook.add_argument(
        "--webhook",
        choices=["none", "service", "local"],
        default="none",
        help=(
            "serve the MistralModel validating webhook: `service` behind the chart's Service "
            "and configuration (this replica keeps its caBundle), `local` out of cluster "
            "(registers https://<listen>:<port> itself and removes it on exit), or `none`"
        ),
    )
    webhook.add_argument("--webhook-port", type=int, default=9443, help="HTTPS port")
    webhook.add_argument(
        "--webhook-listen",
        default=None,
        help="address to listen on (default: 0.0.0.0 for service, 127.0.0.1 for local)",
    )
    webhook.add_argument(
        "--webhook-configuration",
        default="mistral-operator",
        help="name of the ValidatingWebhookConfiguration",
    )
    webhook.add_argument(
        "--webhook-namespace",
        default=os.environ.get("POD_NAMESPACE") or "default",
        help="namespace of the certificate Secret and the Service (default: $POD_NAMESPACE)",
    )
    webhook.add_argument(
        "--webhook-secret",
        default="mistral-operator-webhook-tls",
        help="Secret holding the webhook's CA and serving certificate (created if missing)",
    )
    webhook.add_argument(
        "--webhook-service",
        default="mistral-operator-webhook",
        help="Service in front of the replicas (names the serving certificate's hosts)",
    )
    webhook.add_argument(
        "--webhook-failure-policy",
        choices=["Fail", "Ignore"],
        default="Fail",
        help="failurePolicy of a local registration (the chart sets the service one's)",
    )
    webhook.add_argument(
        "--webhook-timeout-seconds",
        type=int,
        default=5,
        help="timeoutSeconds of a local registration (the chart sets the service one's)",
    )
    webhook.add_argument(
        "--webhook-check-seconds",
        type=float,
        default=300.0,
        help="how often the certificate and the configuration are checked and renewed",
    )


def webhook_options(args: argparse.Namespace) -> WebhookOptions | None:
    """The webhook's options from `run`'s arguments; None without a webhook."""
    from mistral_operator.shell.webhook import WebhookOptions  # noqa: PLC0415

    if args.webhook == "none":
        return None
    listen = args.webhook_listen or ("127.0.0.1" if args.webhook == "local" else "0.0.0.0")  # noqa: S104
    return WebhookOptions(
        mode=args.webhook,
        configuration=args.webhook_configuration,
        namespace=args.webhook_namespace,
        secret=args.webhook_secret,
        service=args.webhook_service,
        listen=listen,
        port=args.webhook_port,
        failure_policy=args.webhook_failure_policy,
        timeout_seconds=args.webhook_timeout_seconds,
        check_seconds=args.webhook_check_seconds,
    )


def _context_length(text: str) -> int:
    """A --context-length value, within the CRD's bounds for runtime.contextLength."""
    value = int(text)
    if not 1024 <= value <= 1048576:
        raise argparse.ArgumentTypeError(f"{value} is outside 1024..1048576 tokens")
    return value


def _fraction(text: str) -> float:
    """A --cache-disk-watermark value: above 0, at most 1."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is not a fraction in (0, 1]")
    return value


def add_sizing_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sizing = sub.add_parser(
        "sizing",
        help="print the planned Compact replica shapes for every profile, GPU and precision",
    )
    sizing.add_argument(
        "--format",
        choices=["markdown", "json"],
        default="markdown",
        help="markdown (as in docs/sizing.md) or json (for tools)",
    )
    sizing.add_argument(
        "--context-length",
        type=_context_length,
        default=None,
        metavar="N",
        help="plan at N tokens (capped at each profile's maximum); default: each maximum",
    )
    docs = sizing.add_mutually_exclusive_group()
    docs.add_argument(
        "--write-docs",
        metavar="FILE",
        help="rewrite the table between the sizing-table markers in FILE (docs/sizing.md)",
    )
    docs.add_argument(
        "--check-docs",
        metavar="FILE",
        help="exit 1 if the table between the sizing-table markers in FILE is out of date",
    )


def run_sizing(args: argparse.Namespace) -> int:
    """Print the sizing table, or write or check the copy in a document."""
    import json  # noqa: PLC0415 - only this command needs it
    from pathlib import Path  # noqa: PLC0415

    from mistral_operator.core import sizing_table  # noqa: PLC0415

    table = sizing_table.build_table(args.context_length)
    markdown = sizing_table.render_markdown(table)
    doc_path = args.write_docs or args.check_docs
    if doc_path is not None:
        if args.context_length is not None or args.format != "markdown":
            # The document holds the default table; a different one would fail the check.
            raise SystemExit("--write-docs and --check-docs take the default markdown table")
        path = Path(doc_path)
        document = path.read_text()
        try:
            updated = sizing_table.replace_block(document, markdown)
        except sizing_table.MissingMarkersError as exc:
            raise SystemExit(f"{path}: {exc}") from exc
        if args.check_docs:
            if updated != document:
                print(f"{path} is out of date: run `make sizing-docs`", file=sys.stderr)
                return 1
            return 0
        if updated != document:
            path.write_text(updated)
        print(f"wrote {path}")
        return 0
    if args.format == "json":
        print(json.dumps(table.to_json(), indent=2))
    else:
        sys.stdout.write(markdown)
    return 0


def run_operator(args: argparse.Namespace) -> int:
    from datetime import timedelta  # noqa: PLC0415

    import kopf  # noqa: PLC0415 - kept out of `--help`'s import time

    from mistral_operator.core.cache_gc import GcSettings  # noqa: PLC0415
    from mistral_operator.core.fill_jobs import FillSettings  # noqa: PLC0415
    from mistral_operator.shell import handlers  # noqa: F401, PLC0415 - registers handlers
    from mistral_operator.shell.settings import RuntimeOptions  # noqa: PLC0415

    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if args.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    options = RuntimeOptions(
        metrics_port=args.metrics_port or None,
        node_grace_seconds=args.node_grace_seconds,
        drift_interval_seconds=args.drift_interval_seconds,
        fill=FillSettings(
            image=args.cache_fill_image,
            progress_seconds=args.cache_fill_progress_seconds,
            verify_after_seconds=args.cache_verify_after_seconds,
        ),
        cache_gc=GcSettings(
            retention=timedelta(seconds=args.cache_gc_retention_seconds),
            watermark=args.cache_disk_watermark,
            namespace=args.cache_gc_namespace,
            image=args.cache_fill_image,
            interval_seconds=args.cache_gc_interval_seconds,
        ),
        peering_name=args.peering_name,
        peering_lifetime_seconds=args.peering_lifetime_seconds,
        standalone=args.standalone,
    )
    webhook = webhook_options(args)
    if webhook is not None:
        from mistral_operator.shell.webhook import register  # noqa: PLC0415

        register(webhook)
    if not args.standalone:
        ensure_peering(args.peering_name, clusterwide=not args.namespace)
    # Kopf lets every replica of the same priority act; distinct priorities leave one.
    priority = args.priority if args.priority is not None else secrets.randbelow(2**31 - 1) + 1
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=args.standalone,
        priority=priority,
        peering_name=args.peering_name,
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
        memo=kopf.Memo(options=options),
    )
    return 0


def _peering_lifetime(value: str) -> int:
    try:
        seconds = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of seconds") from None
    if seconds < 10:
        # Kopf renews a record 5-10 s before it runs out: a shorter one lapses between
        # renewals, and the replicas would take turns.
        raise argparse.ArgumentTypeError(f"{seconds} is less than 10")
    return seconds


def ensure_peering(name: str, *, clusterwide: bool) -> None:
    """Create the peering object the replicas share, if no replica has yet."""
    from mistral_operator.shell.kubeapi import KubeApi  # noqa: PLC0415

    if not clusterwide:
        raise SystemExit(
            "peering with --namespace needs KopfPeering objects in each namespace; "
            "run with --standalone (one replica) or without --namespace"
        )
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": name},
    }
    try:
        KubeApi().ensure(peering)
    except Exception as exc:
        raise SystemExit(
            f"cannot create ClusterKopfPeering {name!r} ({exc}); install the chart's CRDs "
            "(installCRDs=true) or run with --standalone"
        ) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(__version__)
        return 0
    if args.command == "run":
        return run_operator(args)
    if args.command == "crds":
        from mistral_operator.api import crdgen  # noqa: PLC0415

        return crdgen.main(["--output-dir", args.output_dir] + (["--check"] if args.check else []))
    if args.command == "sizing":
        return run_sizing(args)
    if args.command in ("cachefill", "cacheclean"):
        run_cache = cachefill.run if args.command == "cachefill" else cacheclean.run
        return run_cache(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
