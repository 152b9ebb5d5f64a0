"""SGLang's queue gauges: parsed, summed over a group's pods, and read from real servers."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from mistral_operator.core import labels as L  # noqa: N812
from mistral_operator.core.sglang_metrics import GroupSample, PodSample, queue_gauges
from mistral_operator.shell.group_metrics import scrape_groups
from tests.support.sglang_sim import run_simulator, start_load
from tests.support.wait import wait_for

EXPOSITION = """\
# HELP sglang:num_running_reqs The number of running requests.
# TYPE sglang:num_running_reqs gauge
sglang:num_running_reqs{engine_type="unified",model_name="m",tp_rank="0"} 3.0
sglang:num_running_reqs{engine_type="unified",model_name="m",tp_rank="1"} 1.0
# TYPE sglang:num_queue_reqs gauge
sglang:num_queue_reqs{engine_type="unified",model_name="m",tp_rank="0"} 2.0
sglang:num_queue_reqs_total 99
sglang:gen_throughput{model_name="m"} 120.5
"""
AT = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_queued_and_running_are_summed_over_label_sets() -> None:
    assert queue_gauges(EXPOSITION) == (2, 4)


def test_text_without_either_gauge_is_unknown_not_idle() -> None:
    assert queue_gauges("# nothing here\nsglang:gen_throughput 1\n") is None
    assert queue_gauges("sglang:num_queue_reqs 0\n") == (0, 0)


def test_a_group_sums_its_pods_and_a_rank_without_metrics_adds_nothing() -> None:
    group = GroupSample.of(
        [PodSample("g0-0", queued=2, running=3), PodSample("g0-1", absent=True)], AT
    )
    assert (group.queued, group.running, group.total, group.in_flight) == (2, 3, 5, 5)


def test_one_unreadable_pod_makes_the_group_unknown_but_no_server_at_all_is_idle() -> None:
    timeout = PodSample("g0-1", error="http://127.0.0.2:30000/metrics: timeout")
    unknown = GroupSample.of([PodSample("g0-0", queued=1), timeout], AT)
    assert (unknown.total, unknown.in_flight, unknown.refused) == (None, None, False)
    assert "timeout" in unknown.error
    gone = GroupSample.of([PodSample("g0-0", refused=True, error="refused")], AT)
    assert (gone.total, gone.in_flight) == (None, 0)
    nothing = GroupSample.of([PodSample("g0-0", absent=True)], AT)
    assert nothing.total is None
    assert "no pod serves metrics" in nothing.error


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pod(group: str, rank: int, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"name": f"m-{group}-{rank}", "labels": {L.GROUP: group, L.RANK: str(rank)}},
        "status": {"podIP": ip},
    }


def scrape(pods: list[dict[str, Any]], port: int, groups: set[str]) -> dict[str, GroupSample]:
    return asyncio.run(scrape_groups("ns", "m", pods, groups, port=port))


def test_a_busy_simulator_reports_its_queue_then_nothing() -> None:
    port = free_loopback_port()
    pods = [pod("g0", 0, "127.0.0.1")]
    with run_simulator("127.0.0.1", port, service_time=1.5, max_running=1) as sim:
        assert scrape(pods, port, {"g0"})["g0"].total == 0
        load = start_load(sim.url, requests=3, concurrency=3, timeout=30)
        wait_for(
            lambda: scrape(pods, port, {"g0"})["g0"].queued == 2,
            timeout=5,
            what="one request running, two queued",
        )
        assert load.result(timeout=30).ok == 3
        assert scrape(pods, port, {"g0"})["g0"].in_flight == 0


def test_nothing_listening_is_no_request_in_flight_but_no_data_either() -> None:
    found = scrape([pod("g0", 0, "127.0.0.1")], free_loopback_port(), {"g0"})["g0"]
    assert found.refused
    assert found.in_flight == 0
    assert found.total is None


@pytest.fixture
def answers_with() -> Iterator[tuple[int, dict[str, int]]]:
    """A server whose /metrics answers with the status the test sets."""
    statuses: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(statuses["status"])
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1]), statuses
    server.shutdown()
    server.server_close()


def test_a_server_error_is_unknown_and_a_404_rank_only_adds_nothing(
    answers_with: tuple[int, dict[str, int]],
) -> None:
    port, statuses = answers_with
    statuses["status"] = 500
    broken = scrape([pod("g0", 0, "127.0.0.1")], port, {"g0"})["g0"]
    assert broken.total is None
    assert "HTTP 500" in broken.error
    statuses["status"] = 404
    absent = scrape([pod("g0", 0, "127.0.0.1")], port, {"g0"})["g0"]
    assert "no pod serves metrics" in absent.error


def test_only_the_asked_groups_and_no_pod_being_deleted_are_read() -> None:
    leaving = pod("g1", 0, "127.0.0.1")
    leaving["metadata"]["deletionTimestamp"] = "2026-06-01T12:00:00Z"
    assert scrape([pod("g0", 0, "127.0.0.1"), leaving], free_loopback_port(), {"g1"}) == {}
