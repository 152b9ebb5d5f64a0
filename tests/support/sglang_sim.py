"""A small stand-in for one SGLang 0.5 server (the leader of a replica group).

It serves what the operator and the tests look at on a real server: `/health`,
`/ready`, `/v1/models`, `/model_info`, `/server_info`, `/metrics` (Prometheus
text format, SGLang's metric names and labels) and `/v1/chat/completions`. Chat
requests hold one of `max_running` slots for a service time; requests beyond
that wait in a FIFO queue, so load builds a real queue that shows up in
`sglang:num_queue_reqs`.

Tests use `run_simulator` (one server in a background thread), `SimulatorFleet`
(one server per running leader pod, kept in step with the cluster by `sync`)
and `send_load` / `start_load` (a bounded burst of chat requests).

Every server binds a 127.0.0.0/8 address and the load helpers only talk to
one: tests never send traffic anywhere else.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import itertools
import json
import math
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from mistral_operator.core import labels as L  # noqa: N812

SGLANG_VERSION = "0.5.23"
DEFAULT_PORT = L.SGLANG_PORT
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Bucket bounds of SGLang 0.5.23's histograms (observability/metrics_collector.py).
TTFT_BUCKETS = (0.1, 0.2, 0.4, 0.6, 0.8, 1, 2, 4, 6, 8, 10, 20, 40, 60, 80, 100, 200, 400)
E2E_BUCKETS = (*TTFT_BUCKETS, 600, 1200, 1800, 2400)
QUEUE_BUCKETS = (
    *(0.0, 0.001, 0.005, 0.010, 0.050, 0.100, 0.200, 0.500),
    *(1, 2, 3, 4, 5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 100),
    *(200, 300, 400, 500, 600, 700, 800, 900, 1000, 1200, 1400, 1600, 1800, 2000, 2500, 3000),
)


def check_loopback(host: str) -> str:
    """Return ``host`` if it is an IPv4 literal in 127.0.0.0/8; raise ValueError otherwise."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address; the simulator needs 127.x.y.z") from None
    if address.version != 4 or address not in LOOPBACK:
        raise ValueError(f"{host} is outside 127.0.0.0/8; tests must not send traffic elsewhere")
    return host


@dataclasses.dataclass(frozen=True)
class SimulatorOptions:
    """How one simulated server behaves. Unknown option names are a TypeError."""

    model_name: str = "mistral-sim"
    model_path: str = "/models/mistral-sim"
    tp_size: int = 8
    pp_size: int = 1
    context_length: int = 262144
    max_running: int = 16
    # Seconds each chat request holds a slot. None: max_tokens / tokens_per_second,
    # capped at max_service_time.
    service_time: float | None = None
    tokens_per_second: float = 200.0
    max_service_time: float = 30.0
    default_max_tokens: int = 32
    # Seconds after start before /ready and /health answer 200.
    startup_delay: float = 0.0
    # KV-cache capacity in tokens, the denominator of sglang:token_usage.
    max_total_tokens: int = 1_000_000

    def __post_init__(self) -> None:
        if self.max_running < 1:
            raise ValueError("max_running must be at least 1")
        if self.tokens_per_second <= 0:
            raise ValueError("tokens_per_second must be positive")

    def service_seconds(self, max_tokens: int) -> float:
        if self.service_time is not None:
            return self.service_time
        return min(max_tokens / self.tokens_per_second, self.max_service_time)


class _Slots:
    """`capacity` slots handed out in arrival order; the rest wait in a FIFO queue."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running = 0
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.running < self.capacity and not self.waiters:
            self.running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # the slot was handed over just as the request went away
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.running -= 1


class _Histogram:
    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * len(self.bounds)
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.count += 1
        self.sum += value
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1


@dataclasses.dataclass
class _Active:
    tokens: int
    rate: float


def _num(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: Mapping[str, str]) -> str:
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


def _estimate_tokens(messages: object) -> int:
    """About four characters a token, at least one token a message."""
    if not isinstance(messages, list):
        return 1
    total = 0
    for message in messages:
        content = message.get("content", "") if isinstance(message, dict) else ""
        total += max(1, len(content if isinstance(content, str) else json.dumps(content)) // 4)
    return max(1, total)


class SglangSimulator:
    """One simulated SGLang server on ``host:port``, run by its own thread and event loop."""

    def __init__(self, host: str, port: int = DEFAULT_PORT, **options: Any) -> None:
        self.host = check_loopback(host)
        self.port = port
        self.options = SimulatorOptions(**options)
        # Writable from tests: False makes /health answer 503 (a hung server).
        self.healthy = True
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._started_at = 0.0
        self._started_wall = 0.0
        # State below is only touched on the server's loop.
        self._slots = _Slots(self.options.max_running)
        self._active: dict[int, _Active] = {}
        self._ids = itertools.count()
        self._flowing: asyncio.Event | None = None
        self._ttft: dict[str, _Histogram] = {}
        self._e2e: dict[str, _Histogram] = {}
        self._queue_time = _Histogram(QUEUE_BUCKETS)
        self._prompt_tokens: collections.Counter[str] = collections.Counter()
        self._generation_tokens: collections.Counter[str] = collections.Counter()
        self._requests: collections.Counter[str] = collections.Counter()

    # -- lifecycle ---------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SglangSimulator:
        """Bind and serve; returns once the socket is listening (or raises why it could not)."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        loop = asyncio.new_event_loop()
        started: Future[None] = Future()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._bind())
            except BaseException as exc:  # noqa: BLE001 - handed to the starting thread
                started.set_exception(exc)
                loop.close()
                return
            started.set_result(None)
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name=f"sglang-sim-{self.host}", daemon=True)
        self._thread.start()
        try:
            started.result(timeout=30)
        except BaseException:
            self._thread.join(timeout=5)
            self._thread = None
            raise
        return self

    async def _bind(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        app = web.Application()
        app.add_routes(
            [
                web.get("/health", self._health),
                web.get("/health_generate", self._health),
                web.get("/ready", self._ready),
                web.get("/v1/models", self._models),
                web.get("/model_info", self._model_info),
                web.get("/server_info", self._server_info),
                web.get("/metrics", self._metrics),
                web.post("/v1/chat/completions", self._chat),
            ]
        )
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        for address in runner.addresses:
            self.port = int(address[1])  # resolves port 0
        self._started_at = time.monotonic()
        self._started_wall = time.time()

    def stop(self) -> None:
        """Stop serving and join the thread; in-flight requests are cut off. Idempotent."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=15)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._thread = self._loop = self._runner = None

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        # Requests still in flight (a paused or slow batch) are cancelled, not abandoned.
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> SglangSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def is_up(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- test controls -----------------------------------------------------------

    def _call(self, fn: Any) -> Any:
        loop = self._loop
        if loop is None:
            raise RuntimeError("simulator is not running")

        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout=10)

    def pause(self) -> None:
        """Hold every running request past its service time until `resume` (a stalled batch)."""
        self._call(lambda: self._flowing.clear() if self._flowing else None)

    def resume(self) -> None:
        self._call(lambda: self._flowing.set() if self._flowing else None)

    def stats(self) -> dict[str, int]:
        """Running, queued and completed requests, read on the server's loop."""
        return dict(
            self._call(
                lambda: {
                    "running": self._slots.running,
                    "queued": len(self._slots.waiters),
                    "completed": sum(self._requests.values()),
                }
            )
        )

    # -- handlers ----------------------------------------------------------------

    def _is_ready(self) -> bool:
        return time.monotonic() - self._started_at >= self.options.startup_delay

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._is_ready() and self.healthy else 503)

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._is_ready() else 503)

    async def _models(self, request: web.Request) -> web.Response:
        name = self.options.model_name
        card = {
            "id": name,
            "object": "model",
            "created": int(self._started_wall),
            "owned_by": "sglang",
            "root": name,
            "parent": None,
            "max_model_len": self.options.context_length,
        }
        return web.json_response({"object": "list", "data": [card]})

    async def _model_info(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_path": self.options.model_path,
                "served_model_name": self.options.model_name,
                "tokenizer_path": self.options.model_path,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "has_image_understanding": False,
                "has_audio_understanding": False,
            }
        )

    async def _server_info(self, request: web.Request) -> web.Response:
        o = self.options
        return web.json_response(
            {
                "model_path": o.model_path,
                "served_model_name": o.model_name,
                "host": self.host,
                "port": self.port,
                "tp_size": o.tp_size,
                "pp_size": o.pp_size,
                "dp_size": 1,
                "context_length": o.context_length,
                "max_running_requests": o.max_running,
                "max_total_num_tokens": o.max_total_tokens,
                "enable_metrics": True,
                "internal_states": [{"last_gen_throughput": self._gen_throughput()}],
                "startup_time": self._started_wall,
                "version": SGLANG_VERSION,
                "frontend": "python",
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if not self._is_ready():
            return web.json_response({"error": {"message": "server is starting"}}, status=503)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": {"message": "invalid JSON"}}, status=400)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response({"error": {"message": "messages is required"}}, status=400)
        raw_max = body.get("max_tokens") or body.get("max_completion_tokens")
        if raw_max is not None and not isinstance(raw_max, int):
            return web.json_response({"error": {"message": "max_tokens: integer"}}, status=400)
        max_tokens = max(1, raw_max or self.options.default_max_tokens)
        prompt_tokens = _estimate_tokens(body["messages"])
        stream = bool(body.get("stream"))
        service = self.options.service_seconds(max_tokens)

        arrived = time.monotonic()
        await self._slots.acquire()
        began = time.monotonic()
        key = next(self._ids)
        self._active[key] = _Active(prompt_tokens + max_tokens, max_tokens / max(service, 1e-3))
        first_token = service / max_tokens
        try:
            await asyncio.sleep(first_token)
            ttft = time.monotonic() - arrived
            response: web.StreamResponse | None = None
            if stream:
                response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
                await response.prepare(request)
                await response.write(self._chunk(body, {"role": "assistant", "content": "sim"}))
            await asyncio.sleep(max(0.0, service - first_token))
            assert self._flowing is not None
            await self._flowing.wait()
        finally:
            del self._active[key]
            self._slots.release()

        streaming = "true" if stream else "false"
        self._queue_time.observe(began - arrived)
        self._ttft.setdefault(streaming, _Histogram(TTFT_BUCKETS)).observe(ttft)
        self._e2e.setdefault(streaming, _Histogram(E2E_BUCKETS)).observe(time.monotonic() - arrived)
        self._prompt_tokens[streaming] += prompt_tokens
        self._generation_tokens[streaming] += max_tokens
        self._requests[streaming] += 1

        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": max_tokens,
            "total_tokens": prompt_tokens + max_tokens,
            "prompt_tokens_details": None,
            "reasoning_tokens": 0,
        }
        if response is not None:
            await response.write(self._chunk(body, {"content": " ok" * (max_tokens - 1)}, "length"))
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        return web.json_response(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.options.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": ("sim" + " ok" * (max_tokens - 1)),
                            "reasoning_content": None,
                            "tool_calls": None,
                        },
                        "logprobs": None,
                        "finish_reason": "length",
                        "matched_stop": None,
                    }
                ],
                "usage": usage,
            }
        )

    def _chunk(
        self, body: Mapping[str, Any], delta: dict[str, Any], finish: str | None = None
    ) -> bytes:
        chunk = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.options.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(chunk)}\n\n".encode()

    # -- metrics -----------------------------------------------------------------

    def _gen_throughput(self) -> float:
        return sum(a.rate for a in self._active.values())

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self.exposition().encode(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )

    def exposition(self) -> str:
        """The /metrics text; call it on the server's loop (the handler does)."""
        name = self.options.model_name
        # Scheduler metrics are labelled with the rank that reports them (rank 0 here),
        # request metrics by the tokenizer manager with is_streaming on some.
        sched = {
            "model_name": name,
            "engine_type": "unified",
            "tp_rank": "0",
            "pp_rank": "0",
            "moe_ep_rank": "0",
        }
        tok = {"model_name": name, "engine_type": "unified"}
        usage = sum(a.tokens for a in self._active.values()) / self.options.max_total_tokens
        lines: list[str] = []

        def family(metric: str, kind: str, doc: str) -> None:
            lines.extend((f"# HELP {metric} {doc}", f"# TYPE {metric} {kind}"))

        def gauge(metric: str, doc: str, value: float) -> None:
            family(metric, "gauge", doc)
            lines.append(f"{metric}{_labels(sched)} {_num(value)}")

        def histogram(metric: str, labels: Mapping[str, str], h: _Histogram) -> None:
            for bound, count in zip(h.bounds, h.counts, strict=True):
                lines.append(f"{metric}_bucket{_labels({**labels, 'le': _num(bound)})} {count}.0")
            lines.append(f"{metric}_bucket{_labels({**labels, 'le': '+Inf'})} {h.count}.0")
            lines.append(f"{metric}_count{_labels(labels)} {h.count}.0")
            lines.append(f"{metric}_sum{_labels(labels)} {_num(h.sum)}")

        def counter(metric: str, doc: str, values: Mapping[str, int]) -> None:
            family(metric, "counter", doc)
            for streaming, value in sorted(values.items()):
                lines.append(f"{metric}{_labels({**tok, 'is_streaming': streaming})} {value}.0")

        gauge("sglang:num_running_reqs", "The number of running requests.", self._slots.running)
        gauge(
            "sglang:num_queue_reqs",
            "The number of requests in the waiting queue.",
            len(self._slots.waiters),
        )
        gauge("sglang:token_usage", "The token usage.", min(1.0, usage))
        gauge(
            "sglang:gen_throughput", "The generation throughput (token/s).", self._gen_throughput()
        )
        family("sglang:queue_time_seconds", "histogram", "Histogram of queueing time in seconds.")
        if self._queue_time.count:
            histogram("sglang:queue_time_seconds", sched, self._queue_time)
        family(
            "sglang:time_to_first_token_seconds",
            "histogram",
            "Histogram of time to first token in seconds.",
        )
        for streaming, h in sorted(self._ttft.items()):
            histogram("sglang:time_to_first_token_seconds", {**tok, "is_streaming": streaming}, h)
        family(
            "sglang:e2e_request_latency_seconds",
            "histogram",
            "Histogram of End-to-end request latency in seconds",
        )
        for streaming, h in sorted(self._e2e.items()):
            histogram("sglang:e2e_request_latency_seconds", {**tok, "is_streaming": streaming}, h)
        counter(
            "sglang:prompt_tokens_total", "Number of prefill tokens processed.", self._prompt_tokens
        )
        counter(
            "sglang:generation_tokens_total",
            "Number of generation tokens processed.",
            self._generation_tokens,
        )
        counter("sglang:num_requests_total", "Number of requests processed.", self._requests)
        return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_simulator(host: str, port: int = DEFAULT_PORT, **options: Any) -> Iterator[SglangSimulator]:
    """Serve a simulator on ``host:port`` (port 0: any free port) for the ``with`` block."""
    sim = SglangSimulator(host, port, **options)
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


# -- one simulator per leader pod ----------------------------------------------------


def _flag(args: list[str], flag: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def options_from_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Simulator options read from the leader's SGLang command line (served name, sizes)."""
    containers = pod.get("spec", {}).get("containers", [])
    for container in containers:
        args = [*container.get("command", []), *container.get("args", [])]
        if any("sglang.launch_server" in a for a in args) or "--served-model-name" in args:
            break
    else:
        return {}
    found: dict[str, Any] = {}
    for flag, option, kind in (
        ("--served-model-name", "model_name", str),
        ("--model-path", "model_path", str),
        ("--tp-size", "tp_size", int),
        ("--pp-size", "pp_size", int),
        ("--context-length", "context_length", int),
        ("--max-running-requests", "max_running", int),
        ("--port", "port", int),
    ):
        value = _flag(args, flag)
        if value is not None:
            found[option] = kind(value)
    return found


def is_serving_leader(pod: Mapping[str, Any]) -> bool:
    """A running, not terminating leader pod with an IP: where SGLang would listen."""
    meta, status = pod.get("metadata", {}), pod.get("status", {})
    return (
        meta.get("labels", {}).get(L.ROLE) == L.LEADER
        and not meta.get("deletionTimestamp")
        and status.get("phase") == "Running"
        and bool(status.get("podIP"))
    )


class SimulatorFleet:
    """One simulator per running leader pod IP, kept in step with the cluster by `sync`.

    Options given here apply to every server and win over what the pod's command
    line says; ``port=None`` takes the pod's ``--port`` (default 30000).
    """

    def __init__(self, port: int | None = None, **options: Any) -> None:
        SimulatorOptions(**options)  # fail early on a misspelt option
        self.port = port
        self.options = options
        self._servers: dict[str, tuple[str, SglangSimulator]] = {}

    def sync(self, pods: Iterable[Mapping[str, Any]]) -> dict[str, list[str]]:
        """Start servers for new leader pods, stop those whose pods are gone.

        A pod recreated on the same IP (another uid) gets a fresh server. Returns
        the IPs started and stopped.
        """
        wanted: dict[str, Mapping[str, Any]] = {}
        for pod in pods:
            if is_serving_leader(pod):
                wanted[check_loopback(pod["status"]["podIP"])] = pod
        stopped = [
            ip
            for ip, (uid, _) in self._servers.items()
            if ip not in wanted or wanted[ip].get("metadata", {}).get("uid", "") != uid
        ]
        for ip in stopped:
            self._servers.pop(ip)[1].stop()
        started = []
        for ip, pod in wanted.items():
            if ip in self._servers:
                continue
            options = {**options_from_pod(pod), **self.options}
            pod_port = int(options.pop("port", DEFAULT_PORT))
            port = pod_port if self.port is None else self.port
            sim = SglangSimulator(ip, port, **options).start()
            self._servers[ip] = (pod.get("metadata", {}).get("uid", ""), sim)
            started.append(ip)
        return {"started": started, "stopped": stopped}

    def __getitem__(self, ip: str) -> SglangSimulator:
        return self._servers[ip][1]

    def __contains__(self, ip: object) -> bool:
        return ip in self._servers

    def __len__(self) -> int:
        return len(self._servers)

    @property
    def ips(self) -> list[str]:
        return sorted(self._servers)

    def close(self) -> None:
        while self._servers:
            self._servers.popitem()[1][1].stop()

    def __enter__(self) -> SimulatorFleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- load --------------------------------------------------------------------------


@dataclasses.dataclass
class LoadResult:
    """What a burst of chat requests got back."""

    latencies: list[float]  # seconds, of every request that got an HTTP answer
    statuses: collections.Counter[int]  # HTTP status -> count
    timeouts: int  # requests cut off by the overall deadline
    errors: collections.Counter[str]  # connection errors by exception name
    not_sent: int  # requests never started because the deadline passed
    elapsed: float

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)


def _chat_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"{url!r} is not an http URL")
    check_loopback(parts.hostname)
    if parts.path.rstrip("/").endswith("/v1/chat/completions"):
        return url
    return url.rstrip("/") + "/v1/chat/completions"


async def _load(
    url: str, requests: int, concurrency: int, timeout: float, body: dict[str, Any]
) -> LoadResult:
    result = LoadResult([], collections.Counter(), 0, collections.Counter(), 0, 0.0)
    start = time.monotonic()
    deadline = start + timeout
    pending = iter(range(requests))

    async def worker(session: ClientSession) -> None:
        for _ in pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.not_sent += 1
                continue
            sent = time.monotonic()
            try:
                async with session.post(
                    url, json=body, timeout=ClientTimeout(total=remaining)
                ) as response:
                    await response.read()
                    result.statuses[response.status] += 1
                    result.latencies.append(time.monotonic() - sent)
            except TimeoutError:
                result.timeouts += 1
            except ClientError as exc:
                result.errors[type(exc).__name__] += 1

    async with ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(max(1, concurrency))))
    result.elapsed = time.monotonic() - start
    return result


def send_load(
    url: str,
    requests: int,
    concurrency: int,
    timeout: float,
    *,
    max_tokens: int = 16,
    model: str = "default",
) -> LoadResult:
    """Send ``requests`` chat requests, ``concurrency`` at a time, for at most ``timeout`` s.

    ``url`` is a simulator's base URL (or its chat completions URL) on a 127.x
    address. Blocks until every request has an answer or the deadline passed.
    """
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something about the sea."}],
        "max_tokens": max_tokens,
    }
    return asyncio.run(_load(_chat_url(url), requests, concurrency, timeout, body))


def start_load(
    url: str, requests: int, concurrency: int, timeout: float, **kwargs: Any
) -> Future[LoadResult]:
    """`send_load` in a background thread; the future holds its LoadResult."""
    _chat_url(url)  # refuse a bad URL here, not in the thread
    future: Future[LoadResult] = Future()

    def run() -> None:
        try:
            future.set_result(send_load(url, requests, concurrency, timeout, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller via the future
            future.set_exception(exc)

    threading.Thread(target=run, name="sglang-sim-load", daemon=True).start()
    return future
