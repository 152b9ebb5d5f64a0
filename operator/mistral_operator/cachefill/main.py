"""`mistral-operator cachefill`: the command cache-fill Jobs run.

Exit codes: `codes.ExitCode` (the `--help` epilog is rendered from it). With
`--termination-log PATH` the result is also written there as JSON (`result.py`).

Environment: HF_TOKEN (sent as a Bearer token), HF_ENDPOINT (default
https://huggingface.co; a comma-separated list fails over in order).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from mistral_operator.cachefill import space, termination
from mistral_operator.cachefill.codes import ExitCode, render_help
from mistral_operator.cachefill.errors import FillError, UsageError, classify
from mistral_operator.cachefill.fill import FillOptions, FillStats, MiB, fill
from mistral_operator.cachefill.local import LocalReader
from mistral_operator.cachefill.remote import Reader
from mistral_operator.cachefill.result import FillResult
from mistral_operator.cachefill.scrub import scrub
from mistral_operator.cachefill.sources import HubSource, Source, parse_source

log = logging.getLogger("mistral_operator.cachefill")

EPILOG = f"""\
{render_help()}
environment:
  HF_TOKEN     sent as 'Authorization: Bearer' to the hub endpoints
  HF_ENDPOINT  hub URL (default https://huggingface.co); a comma-separated list is
               tried in order, moving on after connection errors and 5xx

progress: a line 'mistral-cachefill-progress {{json}}' on stdout every
--progress-interval seconds and at the end; with --termination-log, one JSON
result object written there at exit (see docs/cache.md).
"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "cachefill",
        help="fill one weight-cache directory (what cache-fill Jobs run)",
        description=(
            "Download SRC at REV into DEST (the cache key directory), verified and "
            "renamed into place atomically with a manifest; resumes after a kill."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--source",
        required=True,
        metavar="SRC",
        help="hf://org/repo[@rev], https://mirror/org/repo, pvc://claim/path or /a/directory",
    )
    parser.add_argument(
        "--revision",
        default=None,
        metavar="REV",
        help="branch, tag or commit (default: the source's @rev, else main)",
    )
    parser.add_argument(
        "--dest", required=True, metavar="DIR", help="the cache directory: <hostPath>/<key>"
    )
    parser.add_argument(
        "--parallel", type=int, default=4, help="streams at once (files, or segments of one)"
    )
    parser.add_argument(
        "--segment-mib",
        type=int,
        default=FillOptions.segment_bytes // MiB,
        metavar="MIB",
        help="fetch larger files as ranges of this size at once (0: each file in one stream)",
    )
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="how long to wait for another filler of DEST (default: wait; 0: exit 8 at once)",
    )
    parser.add_argument(
        "--verify-checksums",
        action="store_true",
        help=(
            "hash every file of a ready DEST against its manifest and fetch again only "
            "the damaged ones (no request when all are intact)"
        ),
    )
    parser.add_argument(
        "--progress-interval", type=float, default=10.0, metavar="SECONDS", help="progress period"
    )
    parser.add_argument(
        "--retries", type=int, default=4, help="retry rounds over all endpoints per request"
    )
    parser.add_argument(
        "--retry-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="first backoff between retry rounds (doubles each round)",
    )
    parser.add_argument(
        "--pvc-mount",
        default="/mnt/source",
        metavar="DIR",
        help="where the Job mounts pvc:// claims (<DIR>/<claim>)",
    )
    add_termination_log(parser)


def add_termination_log(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--termination-log",
        default=None,
        metavar="PATH",
        help="write the result there as one JSON object at exit (a Job: /dev/termination-log)",
    )


def build_reader(source: Source, args: argparse.Namespace) -> Reader:
    if isinstance(source, HubSource):
        # urllib3 loads only for hub sources, keeping `mistral-operator --help` quick.
        from mistral_operator.cachefill.hub import HubReader  # noqa: PLC0415

        return HubReader(
            source,
            os.environ.get("HF_TOKEN") or None,
            retries=args.retries,
            retry_delay=args.retry_delay,
            pool_size=max(args.parallel, 1) + 4,
        )
    return LocalReader(source)


def run(args: argparse.Namespace) -> int:
    """Run one fill; map its failure to an exit code and a one-line message."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s cachefill %(levelname)s %(message)s",
    )
    started = time.monotonic()
    dest = Path(args.dest).absolute()
    stats = FillStats()
    reader: Reader | None = None
    try:
        if args.parallel < 1:
            raise UsageError("--parallel must be at least 1")
        if args.segment_mib < 0:
            raise UsageError("--segment-mib must be 0 or more")
        source = parse_source(
            args.source,
            args.revision,
            hf_endpoint=os.environ.get("HF_ENDPOINT"),
            pvc_mount=args.pvc_mount,
        )
        reader = build_reader(source, args)
        options = FillOptions(
            source=args.source,
            revision=source.revision,
            dest=dest,
            parallel=args.parallel,
            segment_bytes=args.segment_mib * MiB,
            lock_timeout=args.lock_timeout,
            progress_interval=args.progress_interval,
            stream_retries=args.retries,
            retry_delay=args.retry_delay,
        )
        if args.verify_checksums:
            manifest = scrub(options, reader, stats)
        else:
            manifest = fill(options, reader, stats)
    except Exception as exc:  # every failure becomes an exit code and one line
        code, message = classify(exc)
        if not isinstance(exc, FillError | OSError):
            log.exception("unexpected error")
        log.error("%s", message)
        print(f"cachefill: {message}", file=sys.stderr, flush=True)
        disk = space.usage_near(dest)
        result = FillResult.failed(
            code,
            message,
            file=exc.path if isinstance(exc, FillError) else None,
            done_bytes=stats.done_bytes,
            total_bytes=stats.total_bytes,
            disk_free_bytes=None if disk is None else disk.free,
            disk_total_bytes=None if disk is None else disk.total,
        )
        termination.write(args.termination_log, result.render())
        return int(code)
    finally:
        if reader is not None:
            reader.close()
    disk = space.usage_near(dest)
    result = FillResult.succeeded(
        commit=manifest.commit,
        total_bytes=manifest.total_bytes,
        files=len(manifest.files),
        fetched_bytes=stats.fetched_bytes,
        seconds=time.monotonic() - started,
        disk_free_bytes=None if disk is None else disk.free,
        disk_total_bytes=None if disk is None else disk.total,
        verified=stats.verified,
        repaired=stats.repaired,
    )
    termination.write(args.termination_log, result.render())
    return int(ExitCode.OK)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mistral-operator")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return run(parser.parse_args(argv))
