"""The validating admission webhook: every replica serves it, with one certificate they share.

`kubectl apply` of a MistralModel whose spec the operator could not run is refused with
the same `<field>: <reason>` the reconciler would report (core/admission.check_spec).

Each replica, at startup and then every `check_seconds`:
1. reads the certificate Secret and renews what core/certificates says is due (an
   update with the read resourceVersion: when two replicas renew at once, one wins and
   the other takes its result on the next read);
2. writes the serving pair to private files that Kopf's webhook server reloads;
3. keeps the webhook configuration's caBundle (mode `service`: the chart's
   configuration, a Service in front of the replicas) or the whole configuration
   (mode `local`: out of cluster, https://<listen address>:<port>, removed again when
   the operator stops).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from mistral_operator.api import names
from mistral_operator.core import certificates as certs
from mistral_operator.core.admission import (
    WEBHOOK_NAME,
    WEBHOOK_PATH,
    review_refusal,
    webhook_configuration,
)
from mistral_operator.shell.kubeapi import is_transient, load_config, refusal

log = logging.getLogger(__name__)
RESOURCE = (names.GROUP, names.VERSION, names.PLURAL)
Mode = Literal["service", "local"]
# On a configuration the operator registers itself: a digest of what it wrote, so a
# check compares one annotation instead of the API server's defaulted fields.
CONFIG_HASH = f"{names.GROUP}/configuration-digest"


@dataclass(frozen=True)
class WebhookOptions:
    """What `mistral-operator run --webhook ...` was asked for."""

    mode: Mode
    configuration: str
    namespace: str
    secret: str
    service: str
    listen: str
    port: int
    failure_policy: str = "Fail"
    timeout_seconds: int = 5
    check_seconds: float = 300.0

    def hosts(self) -> list[str]:
        """The names the API server may call the webhook by: the serving certificate's."""
        if self.mode == "local":
            return [self.listen, "localhost"] if self.listen != "localhost" else ["localhost"]
        svc = f"{self.service}.{self.namespace}"
        return [f"{svc}.svc", svc, f"{svc}.svc.cluster.local"]


def validate_spec(*, body: kopf.Body, **kwargs: Any) -> None:
    """Refuse a created or changed spec the operator could not run (HTTP 422)."""
    old: kopf.Body | None = kwargs.get("old")
    old_spec = old.get("spec") if old is not None else None
    refused = review_refusal(kwargs.get("operation"), body.get("spec"), old_spec)
    if refused is not None:
        raise kopf.AdmissionError(str(refused), code=422)


class WebhookKeeper:
    """One replica's share of the webhook: its certificate files and the configuration."""

    def __init__(self, options: WebhookOptions, api_client: client.ApiClient) -> None:
        self.options = options
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        self.directory = Path(tempfile.mkdtemp(prefix="mistral-operator-webhook-"))
        self.certfile = self.directory / certs.TLS_CRT
        self.keyfile = self.directory / certs.TLS_KEY
        self._served: bytes | None = None
        self._config_missing_said = False

    def server(self) -> kopf.WebhookServer:
        """Kopf's HTTPS server on our files; it reloads them when they change."""
        return kopf.WebhookServer(
            addr=self.options.listen,
            port=self.options.port,
            certfile=str(self.certfile),
            pkeyfile=str(self.keyfile),
            file_check_interval=min(10.0, self.options.check_seconds),
        )

    def check(self) -> None:
        """Renew what is due, serve the stored pair, and keep the configuration."""
        current = self._stored_certs()
        self._serve(current)
        self._keep_configuration(current.ca_bundle)

    def _stored_certs(self) -> certs.WebhookCerts:
        hosts = self.options.hosts()
        for _ in range(5):
            secret = self._read_secret()
            stored = (
                certs.WebhookCerts.from_data(_decoded(secret.data or {}))
                if secret is not None
                else None
            )
            decision = certs.renewed(stored, hosts, datetime.now(UTC))
            if decision is None:
                assert stored is not None  # nothing is due only for stored certificates
                return stored
            fresh, why = decision
            if self._write_secret(secret, fresh):
                log.info("webhook certificate renewed: %s", why)
                return fresh
        raise RuntimeError("the webhook certificate Secret kept changing under this replica")

    def _read_secret(self) -> client.V1Secret | None:
        try:
            secret: client.V1Secret = self.core.read_namespaced_secret(
                self.options.secret, self.options.namespace
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return secret

    def _write_secret(self, secret: client.V1Secret | None, fresh: certs.WebhookCerts) -> bool:
        """Create or update (at the read resourceVersion); False when another replica won."""
        data = {k: base64.b64encode(v).decode() for k, v in fresh.to_data().items()}
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(
                name=self.options.secret,
                namespace=self.options.namespace,
                labels={"app.kubernetes.io/name": "mistral-operator"},
                resource_version=secret.metadata.resource_version if secret else None,
            ),
            type="kubernetes.io/tls",
            data=data,
        )
        try:
            if secret is None:
                self.core.create_namespaced_secret(self.options.namespace, body)
            else:
                self.core.replace_namespaced_secret(
                    self.options.secret, self.options.namespace, body
                )
        except ApiException as exc:
            if exc.status == 409:  # created or renewed by another replica meanwhile
                return False
            raise
        return True

    def _serve(self, current: certs.WebhookCerts) -> None:
        pair = current.cert + current.key
        if pair == self._served:
            return
        # The key first, each file replaced whole: the server never reads half a pair
        # for long (it reloads on the next check if it read one mid-change).
        _write_private(self.keyfile, current.key)
        _write_private(self.certfile, current.cert)
        self._served = pair
        log.info(
            "webhook serving a certificate valid until %s", current.serving_not_after().isoformat()
        )

    def _keep_configuration(self, ca_bundle: bytes) -> None:
        bundle = base64.b64encode(ca_bundle).decode()
        if self.options.mode == "local":
            self._keep_local(bundle)
        else:
            self._keep_bundle(bundle)

    def _keep_local(self, bundle: str) -> None:
        url = f"https://{_url_host(self.options.listen)}:{self.options.port}{WEBHOOK_PATH}"
        wanted = webhook_configuration(
            self.options.configuration,
            {"url": url, "caBundle": bundle},
            failure_policy=self.options.failure_policy,
            timeout_seconds=self.options.timeout_seconds,
        )
        wanted["metadata"]["annotations"] = {CONFIG_HASH: _digest(wanted)}
        try:
            live = self.admission.read_validating_webhook_configuration(self.options.configuration)
        except ApiException as exc:
            if exc.status != 404:
                raise
            with _tolerate(409):  # another replica created it meanwhile: checked next time
                self.admission.create_validating_webhook_configuration(wanted)
                log.info("webhook registered at %s", url)
            return
        if (live.metadata.annotations or {}).get(CONFIG_HASH) != _digest(wanted):
            wanted["metadata"]["resourceVersion"] = live.metadata.resource_version
            with _tolerate(409):
                self.admission.replace_validating_webhook_configuration(
                    self.options.configuration, wanted
                )
                log.info("webhook configuration %s updated", self.options.configuration)

    def _keep_bundle(self, bundle: str) -> None:
        try:
            live = self.admission.read_validating_webhook_configuration(self.options.configuration)
        except ApiException as exc:
            if exc.status != 404:
                raise
            if not self._config_missing_said:
                log.warning(
                    "ValidatingWebhookConfiguration %s is missing: specs are checked only "
                    "by the CRD's rules until the chart installs it",
                    self.options.configuration,
                )
                self._config_missing_said = True
            return
        self._config_missing_said = False
        stale = [
            i
            for i, hook in enumerate(live.webhooks or [])
            if hook.name == WEBHOOK_NAME and hook.client_config.ca_bundle != bundle
        ]
        if stale:
            patch = [
                {"op": "add", "path": f"/webhooks/{i}/clientConfig/caBundle", "value": bundle}
                for i in stale
            ]
            self.admission.patch_validating_webhook_configuration(self.options.configuration, patch)
            log.info("webhook configuration %s trusts the current CA", self.options.configuration)

    def remove_local(self) -> None:
        """Out of cluster, take the registration away with the server it points at."""
        if self.options.mode != "local":
            return
        with _tolerate(404):
            self.admission.delete_validating_webhook_configuration(self.options.configuration)
            log.info("webhook configuration %s removed", self.options.configuration)

    def close(self) -> None:
        for path in (self.certfile, self.keyfile):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.directory.rmdir()


def register(options: WebhookOptions) -> None:
    """Register the webhook's handler and its keeper's startup and cleanup with Kopf."""
    kopf.on.validate(*RESOURCE, id=WEBHOOK_NAME)(validate_spec)

    async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        keeper = WebhookKeeper(options, load_config())
        await asyncio.to_thread(keeper.check)
        settings.admission.server = keeper.server()
        settings.admission.managed = None  # the keeper owns the configuration
        memo["webhook"] = (keeper, asyncio.create_task(_keep(keeper)))

    async def stop(memo: kopf.Memo, **_: Any) -> None:
        keeper, task = memo.get("webhook") or (None, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if keeper is not None:
            try:
                await asyncio.to_thread(keeper.remove_local)
            except ApiException as exc:
                log.warning("could not remove the webhook configuration: %s", refusal(exc))
            keeper.close()

    kopf.on.startup(id="webhook-start")(start)
    kopf.on.cleanup(id="webhook-stop")(stop)


async def _keep(keeper: WebhookKeeper) -> None:
    while True:
        await asyncio.sleep(keeper.options.check_seconds)
        try:
            await asyncio.to_thread(keeper.check)
        except ApiException as exc:
            log.warning(
                "webhook check failed, retried in %ss: %s",
                keeper.options.check_seconds,
                refusal(exc),
            )
        except Exception as exc:  # a check must never end the loop; it is retried
            if is_transient(exc):  # the API server away (restarting, a lost connection)
                log.warning(
                    "webhook check failed, retried in %ss: %s", keeper.options.check_seconds, exc
                )
            else:
                log.exception("webhook check failed")


def _digest(configuration: Mapping[str, Any]) -> str:
    text = json.dumps(configuration["webhooks"], sort_keys=True).encode()
    return hashlib.sha256(text).hexdigest()[:16]


def _decoded(data: Mapping[str, str]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in data.items()}


def _write_private(path: Path, content: bytes) -> None:
    partial = path.with_suffix(path.suffix + ".part")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    partial.replace(path)


def _url_host(listen: str) -> str:
    if listen in ("", "0.0.0.0"):  # noqa: S104 - a listening address, made reachable
        return "127.0.0.1"
    return f"[{listen}]" if ":" in listen else listen


@contextlib.contextmanager
def _tolerate(status: int) -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        if exc.status != status:
            raise
