"""How busy a draining leader is: SGLang's gauges parsed, and read from a real server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mistral_operator.core.sglang_metrics import requests_in_flight
from mistral_operator.shell.leader_load import in_flight
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


def test_running_and_queued_requests_are_summed_over_label_sets() -> None:
    assert requests_in_flight(EXPOSITION) == 6


def test_text_without_either_gauge_is_unknown_not_idle() -> None:
    assert requests_in_flight("# nothing here\nsglang:gen_throughput 1\n") is None
    assert requests_in_flight("sglang:num_queue_reqs 0\n") == 0


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_busy_simulator_reports_its_requests_then_zero() -> None:
    port = free_loopback_port()
    with run_simulator("127.0.0.1", port, service_time=1.5, max_running=1) as sim:
        assert in_flight("127.0.0.1", port) == 0
        load = start_load(sim.url, requests=3, concurrency=3, timeout=30)
        # One running, two queued.
        wait_for(lambda: in_flight("127.0.0.1", port) == 3, timeout=5, what="3 in flight")
        assert load.result(timeout=30).ok == 3
        assert in_flight("127.0.0.1", port) == 0


def test_nothing_listening_means_nothing_in_flight() -> None:
    assert in_flight("127.0.0.1", free_loopback_port()) == 0


@pytest.fixture
def broken_metrics() -> Iterator[int]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_server_that_answers_with_an_error_is_unknown(broken_metrics: int) -> None:
    assert in_flight("127.0.0.1", broken_metrics) is None
