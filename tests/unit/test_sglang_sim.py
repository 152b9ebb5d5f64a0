"""The SGLang simulator: probes, model listing, a real slot queue, metrics, the fleet."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mistral_operator.core import labels as L  # noqa: N812
from tests.support.sglang_sim import (
    SimulatorFleet,
    SimulatorOptions,
    run_simulator,
    send_load,
    start_load,
)
from tests.support.wait import wait_for

pytestmark = pytest.mark.unit

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def refused(url: str) -> bool:
    """True when nothing listens at ``url`` any more."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.URLError as err:
        return isinstance(err.reason, ConnectionRefusedError)
    return False


def metrics(url: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> (sample name, labels, value), parsed by prometheus_client."""
    status, body = get(url + "/metrics")
    assert status == 200
    return {
        family.name: [(s.name, dict(s.labels), s.value) for s in family.samples]
        for family in text_string_to_metric_families(body.decode())
    }


def value(url: str, sample: str) -> float:
    """The sum of one sample name over its series (as a scraper summing by model would)."""
    family = sample.removesuffix("_total").removesuffix("_count").removesuffix("_sum")
    return sum(v for name, _, v in metrics(url).get(family, []) if name == sample)


def test_ready_and_health_wait_for_the_startup_delay() -> None:
    with run_simulator(HOST, 0, startup_delay=1.5) as sim:
        assert get(sim.url + "/ready")[0] == 503
        assert get(sim.url + "/health")[0] == 503
        wait_for(lambda: get(sim.url + "/ready")[0] == 200, timeout=10, what="/ready 200")
        assert get(sim.url + "/health")[0] == 200
        sim.healthy = False
        assert get(sim.url + "/health")[0] == 503
    assert refused(sim.url + "/health")


def test_models_model_info_and_server_info() -> None:
    with run_simulator(HOST, 0, model_name="mistral-small-4", tp_size=4) as sim:
        status, body = get(sim.url + "/v1/models")
        assert status == 200
        models = json.loads(body)
        assert models["object"] == "list"
        assert [m["id"] for m in models["data"]] == ["mistral-small-4"]
        info = json.loads(get(sim.url + "/model_info")[1])
        assert info["served_model_name"] == "mistral-small-4"
        server = json.loads(get(sim.url + "/server_info")[1])
        assert server["tp_size"] == 4
        assert server["served_model_name"] == "mistral-small-4"


def test_chat_completion_is_openai_shaped() -> None:
    with run_simulator(HOST, 0, model_name="m", service_time=0.01) as sim:
        request = urllib.request.Request(
            sim.url + "/v1/chat/completions",
            data=json.dumps(
                {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            body: dict[str, Any] = json.loads(response.read())
        assert body["object"] == "chat.completion"
        assert body["model"] == "m"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["usage"]["completion_tokens"] == 5


def test_load_builds_a_fifo_queue_visible_in_metrics() -> None:
    with run_simulator(HOST, 0, model_name="m", max_running=2, service_time=0.05) as sim:
        sim.pause()  # running requests stay running until resume: a deterministic queue
        load = start_load(sim.url, requests=6, concurrency=6, timeout=30, max_tokens=4)
        wait_for(
            lambda: (
                value(sim.url, "sglang:num_queue_reqs") == 4
                and value(sim.url, "sglang:num_running_reqs") == 2
            ),
            timeout=10,
            what="4 queued and 2 running",
        )
        assert value(sim.url, "sglang:gen_throughput") > 0
        assert value(sim.url, "sglang:token_usage") > 0
        sim.resume()
        result = load.result(timeout=30)
        assert result.statuses[200] == 6
        assert len(result.latencies) == 6
        assert value(sim.url, "sglang:num_queue_reqs") == 0
        assert value(sim.url, "sglang:num_running_reqs") == 0
        for histogram in (
            "sglang:queue_time_seconds",
            "sglang:time_to_first_token_seconds",
            "sglang:e2e_request_latency_seconds",
        ):
            assert value(sim.url, histogram + "_count") == 6, histogram
        assert value(sim.url, "sglang:queue_time_seconds_sum") > 0
        assert value(sim.url, "sglang:generation_tokens_total") == 6 * 4
        assert value(sim.url, "sglang:prompt_tokens_total") >= 6
        assert value(sim.url, "sglang:num_requests_total") == 6


def test_queue_drains_by_service_time_alone() -> None:
    with run_simulator(HOST, 0, max_running=1, tokens_per_second=100) as sim:
        result = send_load(sim.url, requests=3, concurrency=3, timeout=20, max_tokens=20)
        assert result.ok == 3
        # 0.2 s each, one at a time: the last one waited for the two before it.
        assert max(result.latencies) >= 0.55
        assert value(sim.url, "sglang:queue_time_seconds_sum") >= 0.55


def test_metrics_carry_sglang_labels() -> None:
    with run_simulator(HOST, 0, model_name="mistral-small-4", service_time=0.0) as sim:
        assert send_load(sim.url, requests=1, concurrency=1, timeout=10).ok == 1
        families = metrics(sim.url)
        for name in (
            "sglang:num_queue_reqs",
            "sglang:num_running_reqs",
            "sglang:token_usage",
            "sglang:gen_throughput",
            "sglang:time_to_first_token_seconds",
            "sglang:e2e_request_latency_seconds",
            "sglang:queue_time_seconds",
            "sglang:prompt_tokens",
            "sglang:generation_tokens",
        ):
            assert families[name], name
            assert all(labels["model_name"] == "mistral-small-4" for _, labels, _ in families[name])


def test_load_is_bounded_in_time() -> None:
    with run_simulator(HOST, 0, max_running=1, service_time=5.0) as sim:
        result = send_load(sim.url, requests=4, concurrency=2, timeout=0.5)
        assert result.elapsed < 3
        assert result.ok == 0
        assert result.timeouts + result.not_sent == 4


@pytest.mark.parametrize("host", ["10.0.0.1", "0.0.0.0", "192.168.1.1", "localhost", "::1"])
def test_non_loopback_hosts_are_refused(host: str) -> None:
    with pytest.raises(ValueError, match="127"), run_simulator(host, 0):
        pass
    netloc = f"[{host}]" if ":" in host else host
    with pytest.raises(ValueError, match="127"):
        send_load(f"http://{netloc}:30000", requests=1, concurrency=1, timeout=1)


def test_unknown_option_is_an_error() -> None:
    with pytest.raises(TypeError):
        SimulatorOptions(max_runing=3)  # type: ignore[call-arg]


def pod(
    ip: str | None, *, role: str = L.LEADER, phase: str = "Running", uid: str = "u1"
) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase}
    if ip:
        status["podIP"] = ip
    return {
        "metadata": {"name": f"m-{ip}", "uid": uid, "labels": {L.ROLE: role}},
        "spec": {
            "containers": [
                {
                    "name": "sglang",
                    "command": ["python3", "-m", "sglang.launch_server"],
                    "args": ["--served-model-name", f"model-{ip}", "--tp-size", "8"],
                }
            ]
        },
        "status": status,
    }


def test_fleet_follows_leader_pods() -> None:
    port = free_port()
    a, b = "127.0.0.1", "127.0.0.2"
    with SimulatorFleet(port=port, service_time=0.01) as fleet:
        changes = fleet.sync(
            [
                pod(a),
                pod(b),
                pod("127.0.0.3", role=L.WORKER),
                pod(None, phase="Pending"),
                pod("127.0.0.4", phase="Succeeded"),
            ]
        )
        assert sorted(changes["started"]) == [a, b]
        assert fleet.ips == [a, b]
        for ip in (a, b):
            models = json.loads(get(f"http://{ip}:{port}/v1/models")[1])
            assert models["data"][0]["id"] == f"model-{ip}"

        server_b = fleet[b]
        changes = fleet.sync([pod(b)])
        assert changes == {"started": [], "stopped": [a]}
        assert a not in fleet
        assert fleet[b] is server_b
        assert refused(f"http://{a}:{port}/health")
        assert get(f"http://{b}:{port}/health")[0] == 200

        # The pod is recreated on the same IP: a fresh server.
        changes = fleet.sync([pod(b, uid="u2")])
        assert changes == {"started": [b], "stopped": [b]}
        assert fleet[b] is not server_b
        assert get(f"http://{b}:{port}/ready")[0] == 200

        with pytest.raises(ValueError, match="127"):
            fleet.sync([pod("10.1.2.3")])
    assert len(fleet) == 0
    assert refused(f"http://{b}:{port}/health")
