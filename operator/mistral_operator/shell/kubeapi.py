"""Kubernetes I/O: server-side apply with one field manager, deletes and status writes, retried."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from mistral_operator.shell import metrics

FIELD_MANAGER = "mistral-operator"
_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
log = logging.getLogger(__name__)
T = TypeVar("T")
LOG_TIMEOUT_SECONDS = 5


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: throttling, server errors and lost connections."""
    if isinstance(exc, ApiException):
        return exc.status in _RETRYABLE_STATUS or exc.status == 0
    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


# Answers that say "not this object, not like this" (a validation, an admission policy
# or webhook, a quota, RBAC): the same write gets the same answer until someone changes
# the cluster or the spec. Not 404 (gone) or 409 (a conflict): callers handle those.
_REFUSAL_STATUS = frozenset({400, 403, 413, 422})


def refusal(exc: ApiException) -> str:
    """An API server's refusal in one line: status, reason and its own message."""
    message = server_message(exc)
    return f"HTTP {exc.status} {exc.reason}" + (f": {message}" if message else "")


def is_refusal(exc: BaseException) -> bool:
    """Whether the API server refused a write for what it is (see ``_REFUSAL_STATUS``)."""
    return isinstance(exc, ApiException) and exc.status in _REFUSAL_STATUS


def server_message(exc: ApiException) -> str:
    """The message of the API server's Status body; empty when the body has none."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        return ""


def server_reason(exc: ApiException) -> str:
    """The Status body's reason (Invalid, Forbidden, ...), else the HTTP reason phrase:
    the body's word tells a validation from a policy, the phrase does not."""
    try:
        reason = json.loads(exc.body or "{}").get("reason")
    except (ValueError, AttributeError):
        reason = None
    return str(reason or exc.reason or "")


def _record_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    metrics.API_ERRORS.labels(reason=type(exc).__name__ if exc else "unknown").inc()
    log.warning("transient API error, retrying (attempt %d): %s", state.attempt_number, exc)


_retry = retry(
    retry=retry_if_exception(is_transient),
    wait=wait_exponential_jitter(multiplier=0.2, max=5),
    stop=stop_after_attempt(6),
    before_sleep=_record_retry,
    reraise=True,
)


def load_config() -> client.ApiClient:
    """In-cluster config when running in a pod, else the kubeconfig (KUBECONFIG or default)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


class KubeApi:
    """The operator's only door to the API server."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._dynamic = DynamicClient(api_client or load_config())

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def _call(self, verb: str, kind: str, fn: Callable[[], T]) -> T:
        result: T = _retry(fn)()
        metrics.API_WRITES.labels(verb=verb, kind=kind).inc()
        return result

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of a whole object, taking ownership of the fields we set."""
        resource = self._resource(obj["apiVersion"], obj["kind"])
        meta = obj["metadata"]
        result = self._call(
            "apply",
            obj["kind"],
            lambda: self._dynamic.server_side_apply(
                resource,
                body=dict(obj),
                name=meta["name"],
                namespace=meta.get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            ),
        )
        return dict(result.to_dict())

    def ensure(self, obj: Mapping[str, Any]) -> bool:
        """Create an object unless it exists; True if this call created it."""
        resource = self._resource(obj["apiVersion"], obj["kind"])

        def call() -> bool:
            try:
                self._dynamic.create(resource, body=dict(obj))
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            return True

        return self._call("create", obj["kind"], call)

    def apply_status(
        self, api_version: str, kind: str, namespace: str, name: str, status: Mapping[str, Any]
    ) -> None:
        """Server-side apply of the status subresource: no read-modify-write, no conflicts."""
        resource = self._resource(api_version, kind).subresources["status"]
        body = {
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "status": dict(status),
        }
        self._call(
            "apply-status",
            kind,
            lambda: self._dynamic.server_side_apply(
                resource,
                body=body,
                name=name,
                namespace=namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            ),
        )

    def patch_labels(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        labels: Mapping[str, str | None],
    ) -> None:
        """Set or (with None) remove labels: a merge patch that touches nothing else.

        Recorded under the operator's field manager. Not an apply: applying only the
        labels would, under the same manager, give up the pod spec fields it owns.
        """
        self._patch_metadata(api_version, kind, namespace, name, {"labels": dict(labels)})

    def patch_annotations(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        annotations: Mapping[str, str | None],
    ) -> None:
        """Set or (with None) remove annotations, as ``patch_labels`` does labels."""
        self._patch_metadata(api_version, kind, namespace, name, {"annotations": dict(annotations)})

    def _patch_metadata(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        metadata: Mapping[str, Any],
    ) -> None:
        resource = self._resource(api_version, kind)
        body = {"metadata": dict(metadata)}
        self._call(
            "patch-metadata",
            kind,
            lambda: self._dynamic.patch(
                resource,
                body=body,
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
                field_manager=FIELD_MANAGER,
            ),
        )

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        uid: str | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Delete one object (only the one with ``uid`` when given); False if it was gone.

        ``force`` skips the grace period: only for pods whose node no longer exists.
        """
        resource = self._resource(api_version, kind)
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        if force:
            body["gracePeriodSeconds"] = 0

        def call() -> bool:
            try:
                self._dynamic.delete(resource, name=name, namespace=namespace, body=body)
            except ApiException as exc:
                if exc.status in {404, 409}:
                    return False
                raise
            return True

        return self._call("delete", kind, call)

    def log_tail(self, namespace: str, pod: str, lines: int) -> str | None:
        """The last ``lines`` lines of a pod's (only) container log; None when the API
        server cannot get it (the kubelet does not answer): one try, no retries."""
        core = client.CoreV1Api(self._dynamic.client)
        try:
            text = core.read_namespaced_pod_log(
                pod, namespace, tail_lines=lines, _request_timeout=LOG_TIMEOUT_SECONDS
            )
        except (ApiException, urllib3.exceptions.HTTPError) as exc:
            log.debug("no log of %s/%s: %s", namespace, pod, exc)
            return None
        return str(text)

    def list(
        self, api_version: str, kind: str, namespace: str | None = None, label_selector: str = ""
    ) -> list[dict[str, Any]]:
        resource = self._resource(api_version, kind)
        result = _retry(
            lambda: self._dynamic.get(resource, namespace=namespace, label_selector=label_selector)
        )()
        return [dict(item) for item in result.to_dict().get("items", [])]
