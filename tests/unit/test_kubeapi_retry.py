"""Which API errors the shell retries: throttling, server errors and lost connections only."""

from __future__ import annotations

import json

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from mistral_operator.shell.kubeapi import is_transient, refusal


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_throttling_and_server_errors_are_retried(status: int) -> None:
    assert is_transient(ApiException(status=status))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert not is_transient(ApiException(status=status))


def test_lost_connections_are_retried() -> None:
    assert is_transient(ConnectionResetError())
    assert is_transient(urllib3.exceptions.ProtocolError("connection aborted"))
    assert not is_transient(ValueError("a bug, not the network"))


def test_a_refusal_reads_as_one_line_with_the_api_servers_message() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = json.dumps(
        {"kind": "Status", "message": 'pods is forbidden: clusterrole "r" not found'}
    )
    assert refusal(exc) == 'HTTP 403 Forbidden: pods is forbidden: clusterrole "r" not found'
    assert refusal(ApiException(status=422, reason="Unprocessable")) == "HTTP 422 Unprocessable"
    odd = ApiException(status=500, reason="Oops")
    odd.body = "not json"
    assert refusal(odd) == "HTTP 500 Oops"
