"""Which client failures are transient (retry / skip the cycle) and which are permanent."""

from __future__ import annotations

import pytest
import requests
from kubernetes.client.exceptions import ApiException
from prometheus_api_client.exceptions import PrometheusApiClientException

from inferno.errors import ActuateError
from live.errors import actuate_error, is_retryable_status, kube_collect_error, prom_collect_error


@pytest.mark.parametrize(("status", "retryable"), [
    (409, True), (429, True), (408, True), (500, True), (503, True),
    (400, False), (401, False), (403, False), (404, False), (422, False),
])
def test_retryable_statuses(status: int, retryable: bool) -> None:
    """409/429/408/5xx are worth retrying; other 4xx need a person."""
    assert is_retryable_status(status) is retryable


def test_api_exception_keeps_status_retry_after_and_cause() -> None:
    """An ApiException becomes an ActuateError with its Retry-After hint and as __cause__."""
    exc = ApiException(status=429, reason="Too Many Requests")
    exc.headers = {"Retry-After": "2"}
    with pytest.raises(ActuateError, match="patch infer/d1: HTTP 429") as info:
        raise actuate_error(exc, "patch infer/d1") from exc
    assert (info.value.transient, info.value.retry_after_s) == (True, 2.0)
    assert info.value.__cause__ is exc


def test_forbidden_list_is_permanent_collect_error() -> None:
    """RBAC denial (403) on a read is a non-transient CollectError."""
    error = kube_collect_error(ApiException(status=403, reason="Forbidden"), "list")
    assert (error.transient, error.retry_after_s) == (False, None)


@pytest.mark.parametrize(("exc", "transient"), [
    (PrometheusApiClientException("HTTP Status Code 400 (b'bad query')"), False),
    (PrometheusApiClientException("HTTP Status Code 503 (b'')"), True),
    (requests.exceptions.ConnectionError("refused"), True),
    (requests.exceptions.Timeout("slow"), True),
], ids=["bad-query", "unavailable", "refused", "timeout"])
def test_prometheus_failures(exc: Exception, transient: bool) -> None:
    """A bad query is permanent; unavailability, refusal and timeouts are transient."""
    assert prom_collect_error(exc, "up").transient is transient
