"""Translate client-library failures into inferno's error vocabulary.

The Kubernetes client raises `ApiException` (an HTTP status from the API server) or urllib3
errors (no answer at all); prometheus-api-client raises `PrometheusApiClientException` for a
non-200 answer and `requests` errors for transport failures. The controller only knows
`CollectError` / `ActuateError` with `transient`, so this module decides, in one place, which
failures are worth retrying (kopf's TemporaryError/PermanentError split). Every wrapper keeps the
original as `__cause__` (callers use ``raise wrapped from exc``).

Transient: no answer (connection refused/reset, timeout), 408, 409 (conflict), 429 (throttled)
and every 5xx. Permanent: the other 4xx (auth, RBAC, not found, invalid patch) — retrying them
cannot help, a person has to fix something.
"""

from __future__ import annotations

import math
import re
from typing import TypeVar

import requests
import urllib3.exceptions
from kubernetes.client.exceptions import ApiException
from prometheus_api_client.exceptions import PrometheusApiClientException

from inferno.errors import ActuateError, CollectError

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""HTTP statuses below 500 that a later attempt can clear."""

#: Failures of the transport itself (the server never answered).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    requests.exceptions.RequestException,
    OSError,
)

#: Every failure of a Kubernetes API call: an HTTP status or no answer.
KUBE_ERRORS: tuple[type[BaseException], ...] = (ApiException, *TRANSPORT_ERRORS)

#: Every failure of a Prometheus query: a non-200 answer or no answer.
PROM_ERRORS: tuple[type[BaseException], ...] = (PrometheusApiClientException, *TRANSPORT_ERRORS)

_PROM_STATUS = re.compile(r"HTTP Status Code (\d{3})")


def is_retryable_status(status: int) -> bool:
    """True when an HTTP status means "try again later" rather than "fix the request"."""
    return status in RETRYABLE_STATUSES or status >= 500


def retry_after_s(exc: ApiException) -> float | None:
    """The server's Retry-After hint in seconds, if it sent a numeric one."""
    headers = exc.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date; the caller's own backoff applies
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _api_reason(exc: ApiException) -> str:
    return f"HTTP {exc.status} {exc.reason or ''}".strip()


E = TypeVar("E", ActuateError, CollectError)


def _kube_error(cls: type[E], exc: BaseException, what: str) -> E:
    if isinstance(exc, ApiException):
        return cls(f"{what}: {_api_reason(exc)}", transient=is_retryable_status(exc.status),
                   retry_after_s=retry_after_s(exc))
    return cls(f"{what}: {type(exc).__name__}: {exc}", transient=True)


def actuate_error(exc: BaseException, what: str) -> ActuateError:
    """Wrap a Kubernetes client failure met while writing `what` (e.g. "patch infer/dep1")."""
    return _kube_error(ActuateError, exc, what)


def kube_collect_error(exc: BaseException, what: str) -> CollectError:
    """Wrap a Kubernetes client failure met while reading `what` (e.g. "list deployments")."""
    return _kube_error(CollectError, exc, what)


def prom_collect_error(exc: BaseException, query: str) -> CollectError:
    """Wrap a failed Prometheus query; an HTTP 4xx other than 408/429 is not transient."""
    if isinstance(exc, PrometheusApiClientException):
        match = _PROM_STATUS.search(str(exc))
        status = int(match.group(1)) if match else 500
        return CollectError(f"prometheus query {query!r}: HTTP {status}",
                            transient=is_retryable_status(status))
    return CollectError(f"prometheus query {query!r}: {type(exc).__name__}: {exc}", transient=True)
