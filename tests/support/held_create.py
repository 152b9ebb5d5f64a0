"""A validating webhook that holds one pod's create until the test lets it go.

It lands a freeze of the operator between two writes of one plan, where no timing can:
the operator's request for the named pod waits inside the API server, the test knows
it was sent (``arrived``), stops the operator, and lets the create finish (``release``);
the operator reads the answer only when it runs again, and its next write is the one
that plan made next.

The server runs in the test process on 127.0.0.1 with a CA of its own (issued by the
operator's certificate code); the configuration matches pod creates of one namespace
and allows everything, so the only effect is the wait. Its failure policy is Ignore and
a held request is let go before the API server's 30 s timeout in any case.
"""

from __future__ import annotations

import base64
import json
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mistral_operator.core.certificates import renewed
from tests.support.cluster import Cluster
from tests.support.wait import wait_for

HOLD_LIMIT = 25.0  # under the API server's 30 s webhook timeout


@dataclass
class HeldCreate:
    """The create of ``pod``: ``arrived`` once the API server asked about it."""

    pod: str
    arrived: threading.Event = field(default_factory=threading.Event)
    reviews: int = 0  # every review asked of it
    _released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self._released.set()

    def review(self, body: dict[str, Any]) -> dict[str, Any]:
        self.reviews += 1
        request = body.get("request") or {}
        name = request.get("name") or ((request.get("object") or {}).get("metadata") or {}).get(
            "name"
        )
        if name == self.pod and not self.arrived.is_set():
            self.arrived.set()
            self._released.wait(HOLD_LIMIT)
        return {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": request.get("uid", ""), "allowed": True},
        }


@contextmanager
def held_create(cluster: Cluster, namespace: str, pod: str) -> Iterator[HeldCreate]:
    """Hold the first create of ``pod`` in ``namespace`` until ``release()``."""
    held = HeldCreate(pod)
    issued = renewed(None, ["127.0.0.1"], datetime.now(UTC))  # no CA yet: always issued
    assert issued is not None
    certs = issued[0]
    with tempfile.TemporaryDirectory(prefix="held-create-") as tmp:
        cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        cert.write_bytes(certs.cert)
        key.write_bytes(certs.key)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(held))
        server.daemon_threads = True
        server.socket = context.wrap_socket(server.socket, server_side=True)
        thread = threading.Thread(target=server.serve_forever, name="held-create", daemon=True)
        thread.start()
        config = f"held-create-{namespace}"
        cluster.kubectl(
            "apply", "-f", "-", input=json.dumps(_configuration(
                config, namespace, server.server_address[1], certs.ca_bundle
            )),
        )  # fmt: skip
        try:
            _wait_until_called(cluster, namespace, held)
            yield held
        finally:
            held.release()
            cluster.kubectl("delete", "validatingwebhookconfiguration", config, check=False)
            server.shutdown()
            thread.join(timeout=10)


def _wait_until_called(cluster: Cluster, namespace: str, held: HeldCreate) -> None:
    """The API server reads a new configuration within a moment: a dry-run create of a
    throwaway pod tells when it calls this server."""
    probe = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "held-create-probe", "namespace": namespace},
        "spec": {"containers": [{"name": "probe", "image": "probe"}]},
    }

    def called() -> bool:
        before = held.reviews
        cluster.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(probe))
        return held.reviews > before

    wait_for(called, timeout=30, what="the API server to call the holding webhook")


def _handler(held: HeldCreate) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            answer = json.dumps(held.review(json.loads(self.rfile.read(length)))).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            del format, args  # quiet: the test reports what matters

    return Handler


def _configuration(name: str, namespace: str, port: int, ca_bundle: bytes) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "hold.test.mistral-operator.dev",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{port}/hold",
                    "caBundle": base64.b64encode(ca_bundle).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "timeoutSeconds": 30,
                "admissionReviewVersions": ["v1"],
            }
        ],
    }
