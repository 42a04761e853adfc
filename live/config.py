"""Connection settings for live mode: Kubernetes API client and Prometheus client.

Settings are frozen dataclasses read once from the environment (the upstream variable names,
docs/design/control-loop.md §1.2) and passed explicitly; nothing here touches the client libraries'
global
default configuration, so two clusters (or a test emulator) can be used in one process.

Kubeconfig resolution follows kubectl (client-go's default loading rules): ``KUBECONFIG`` (a
list of files separated by ``:``, merged) when set and not empty, else ``~/.kube/config`` when it
exists, else the pod's service account (in-cluster). An explicitly configured token or CA file
that cannot be read is an error, while the service-account defaults may be missing (tokenless /
system roots).

Bearer tokens travel over https only: the service-account token (which may patch Deployments)
is never sent to a plain-http Prometheus, and an explicit token file with an http URL is refused
at start, unless the operator marks the URL with ``INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN=true``
(e.g. a sidecar proxy on localhost). The client libraries' own retries are switched off: the
callers retry within the cycle's deadline (`live.deadline`), so retries never stack.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import kubernetes.client
import kubernetes.config
import requests
import yaml
from kubernetes.config.config_exception import ConfigException
from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from inferno.errors import CollectError, ConfigError
from inferno.io.flags import parse_bool
from inferno.model.units import MS_PER_S, S_PER_HR, S_PER_MIN

log = logging.getLogger(__name__)

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
SA_TOKEN = SA_DIR / "token"
SA_CA = SA_DIR / "ca.crt"

DEFAULT_PROM_URL = "http://localhost:9090"
DEFAULT_WINDOW = "1m"
DEFAULT_DEPLOYMENT_LABEL = "deployment"

_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h|d|w|y))+$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True, kw_only=True)
class KubeSettings:
    """How to reach the Kubernetes API and how hard to try."""

    kubeconfig: str = ""
    """Kubeconfig file(s), ``:``-separated; empty = in-cluster service account (see
    `kube_settings_from_env` for the kubectl-like default)."""
    watch_namespace: str = ""
    """Only Deployments of this namespace are managed; empty = all namespaces."""
    request_timeout_s: float = 10.0
    """Per-request timeout; a hung API server must not stall a control cycle forever."""
    max_attempts: int = 5
    """Attempts per write on 409/429/5xx or no answer, the first one included."""
    backoff_s: float = 0.2
    """First retry delay; doubled per attempt (0.2, 0.4, 0.8, 1.6 s: 3 s in total at most)."""
    max_backoff_s: float = 5.0
    """Cap of one retry delay, also of a server's Retry-After hint."""
    max_concurrent_writes: int = 8
    """Deployments patched in parallel: 100 changes at ~10 ms each fit in a 1 s cycle."""

    def __post_init__(self) -> None:
        if self.max_concurrent_writes < 1:
            raise ConfigError("kube settings: max_concurrent_writes must be >= 1, got "
                              f"{self.max_concurrent_writes}")
        if self.max_attempts < 1:
            raise ConfigError(f"kube settings: max_attempts must be >= 1, got {self.max_attempts}")
        if self.backoff_s < 0 or self.max_backoff_s < 0 or self.request_timeout_s <= 0:
            raise ConfigError("kube settings: backoff_s and max_backoff_s must be >= 0 and "
                              f"request_timeout_s > 0, got {self.backoff_s}, "
                              f"{self.max_backoff_s}, {self.request_timeout_s}")


@dataclass(frozen=True, slots=True, kw_only=True)
class PromSettings:
    """How to reach Prometheus (or Thanos) and how vLLM series map to Deployments."""

    url: str = DEFAULT_PROM_URL
    """Base URL of the Prometheus HTTP API."""
    token_path: str | None = None
    """Bearer token file, re-read before every collect (rotating projected tokens);
    None = the service-account token if present, else no token."""
    ca_path: str | None = None
    """CA bundle for an https URL; None = the service-account CA if present, else system roots."""
    insecure: bool = False
    """Skip TLS verification (test clusters only)."""
    allow_http_token: bool = False
    """Send the bearer token over plain http too. Off: a token that may patch every
    Deployment must not cross the network in clear; mark the URL only for a loopback or
    sidecar proxy."""
    window: str = DEFAULT_WINDOW
    """PromQL range window of rate()/avg_over_time(); at least 2 scrape intervals."""
    recent_window: str = "30s"
    """Short window at the end of `window` for the load now (scale-up without the window's
    lag); at least 2 scrape intervals."""
    timeout_s: float = 5.0
    """Per-query timeout."""
    retries: int = 0
    """In-call retries of a failed query; 0 because a failed collect just skips the cycle."""
    namespace_label: str = "namespace"
    """Series label holding the pod's namespace."""
    deployment_label: str = DEFAULT_DEPLOYMENT_LABEL
    """Series label holding the name of the Deployment that owns the pod (see docs/live.md)."""
    pod_label: str = "pod"
    """Series label holding the pod name: counts the replicas that reported in the window."""
    time_scale: float = 1.0
    """Simulated seconds per wall second of the metrics: the `--speedup` of an `inferno
    emulate` cluster, whose counters are already divided by it (gauge growth over the window
    is not, so the window counts for this many seconds). 1 on a real cluster."""

    @property
    def window_s(self) -> float:
        """The window in seconds of the metrics' time (a Prometheus duration, scaled)."""
        return duration_s(self.window) * self.time_scale

    @property
    def recent_window_s(self) -> float:
        return duration_s(self.recent_window) * self.time_scale

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"INFERNO_PROMETHEUS_URL: must start with http:// or https://, "
                              f"got {self.url!r}")
        for name, value in (("INFERNO_PROMETHEUS_WINDOW", self.window),
                            ("INFERNO_PROMETHEUS_RECENT_WINDOW", self.recent_window)):
            if not _DURATION.match(value):
                raise ConfigError(f"{name}: must be a Prometheus duration such as 30s or 1m, "
                                  f"got {value!r}")
        for field, value in (("namespace_label", self.namespace_label),
                             ("deployment_label", self.deployment_label),
                             ("pod_label", self.pod_label)):
            if not _LABEL_NAME.match(value):
                raise ConfigError(f"prometheus settings: {field} must be a label name, "
                                  f"got {value!r}")
        if not (math.isfinite(self.time_scale) and self.time_scale > 0):
            raise ConfigError(f"INFERNO_EMULATION_SPEEDUP: must be > 0, got {self.time_scale!r}")
        if (self.token_path is not None and not self.is_https
                and not self.allow_http_token):
            raise ConfigError(
                f"INFERNO_PROMETHEUS_TOKEN_PATH {self.token_path}: the token would be sent in "
                f"clear to {self.url}; use an https URL, or set "
                "INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN=true if this http URL is trusted")
        if self.timeout_s <= 0 or self.retries < 0:
            raise ConfigError(f"prometheus settings: timeout_s must be > 0 and retries >= 0, "
                              f"got {self.timeout_s}, {self.retries}")

    @property
    def is_https(self) -> bool:
        return self.url.lower().startswith("https://")

    @property
    def may_send_token(self) -> bool:
        """True when a bearer token may be sent to `url` (https, or marked by the operator)."""
        return self.is_https or self.allow_http_token


_UNIT_S = {"ms": 1 / MS_PER_S, "s": 1.0, "m": S_PER_MIN, "h": S_PER_HR, "d": 86400.0, "w": 604800.0,
           "y": 31536000.0}


def duration_s(text: str) -> float:
    """Seconds of a Prometheus duration such as ``1m30s``."""
    return sum(float(n) * _UNIT_S[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def _flag(env: Mapping[str, str], name: str) -> bool:
    return parse_bool(env.get(name, ""), source=name)


def default_kubeconfig(env: Mapping[str, str]) -> str:
    """kubectl's choice: ``KUBECONFIG`` if set and not empty, else ``~/.kube/config`` if it
    exists (``HOME`` from `env`), else "" (in-cluster)."""
    explicit = env.get("KUBECONFIG", "").strip()
    if explicit:
        return explicit
    home = env.get("HOME", "").strip()
    candidate = (Path(home) if home else Path.home()) / ".kube" / "config"
    return str(candidate) if candidate.is_file() else ""


def kube_settings_from_env(env: Mapping[str, str]) -> KubeSettings:
    """Read ``KUBECONFIG`` (kubectl-like default, `default_kubeconfig`) and
    ``WATCH_NAMESPACE`` (empty or unset = all namespaces)."""
    return KubeSettings(kubeconfig=default_kubeconfig(env),
                        watch_namespace=env.get("WATCH_NAMESPACE", "").strip())


def prom_settings_from_env(env: Mapping[str, str]) -> PromSettings:
    """Read the ``INFERNO_PROMETHEUS_*`` variables (empty or unset = default)."""
    return PromSettings(
        url=env.get("INFERNO_PROMETHEUS_URL", "").strip() or DEFAULT_PROM_URL,
        token_path=env.get("INFERNO_PROMETHEUS_TOKEN_PATH", "").strip() or None,
        ca_path=env.get("INFERNO_PROMETHEUS_CA_PATH", "").strip() or None,
        insecure=_flag(env, "INFERNO_PROMETHEUS_INSECURE"),
        allow_http_token=_flag(env, "INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN"),
        window=env.get("INFERNO_PROMETHEUS_WINDOW", "").strip() or DEFAULT_WINDOW,
        recent_window=env.get("INFERNO_PROMETHEUS_RECENT_WINDOW", "").strip() or "30s",
        deployment_label=(env.get("INFERNO_PROMETHEUS_DEPLOYMENT_LABEL", "").strip()
                          or DEFAULT_DEPLOYMENT_LABEL),
        pod_label=env.get("INFERNO_PROMETHEUS_POD_LABEL", "").strip() or "pod",
        time_scale=_positive(env, "INFERNO_EMULATION_SPEEDUP", 1.0),
    )


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name}: must be a number > 0, got {raw!r}") from None


def load_api_client(settings: KubeSettings) -> kubernetes.client.ApiClient:
    """An ApiClient for the kubeconfig file, or for the pod's service account if none is set.

    urllib3's retries are off (``retries=False``): a hung API server otherwise costs up to
    four timeouts per call before our own retries even start.
    """
    configuration = kubernetes.client.Configuration()
    if settings.kubeconfig:
        try:
            kubernetes.config.load_kube_config(config_file=settings.kubeconfig,
                                               client_configuration=configuration,
                                               persist_config=False)
        except (ConfigException, OSError, yaml.YAMLError, TypeError, KeyError) as exc:
            raise ConfigError(f"KUBECONFIG {settings.kubeconfig}: cannot load: {exc}") from exc
    else:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise ConfigError(f"KUBECONFIG is empty, there is no ~/.kube/config and this is not a "
                              f"pod with a service account ({exc}); set KUBECONFIG to a "
                              "kubeconfig file") from exc
    configuration.retries = False
    return kubernetes.client.ApiClient(configuration=configuration)


def tls_verify(settings: PromSettings) -> bool | str:
    """The `requests` verify value: False, a CA bundle path, or True (system roots)."""
    if settings.insecure:
        return False
    if settings.ca_path is not None:
        try:
            text = Path(settings.ca_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"INFERNO_PROMETHEUS_CA_PATH {settings.ca_path}: "
                              f"cannot read: {exc}") from exc
        if "BEGIN CERTIFICATE" not in text:
            raise ConfigError(f"INFERNO_PROMETHEUS_CA_PATH {settings.ca_path}: "
                              "contains no PEM certificate")
        return settings.ca_path
    if settings.url.startswith("https://"):
        if SA_CA.is_file():
            return str(SA_CA)
        log.info("no service-account CA at %s; verifying Prometheus with system roots", SA_CA)
    return True


def read_bearer_token(settings: PromSettings) -> str | None:
    """The current bearer token, or None when running tokenless.

    Re-read on every collect because projected service-account tokens rotate. None whenever
    `settings.may_send_token` is false (plain http). Raises CollectError (transient) when an
    explicitly configured file cannot be read.
    """
    if not settings.may_send_token:
        return None
    if settings.token_path is None:
        try:
            return SA_TOKEN.read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    try:
        return Path(settings.token_path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        raise CollectError(f"INFERNO_PROMETHEUS_TOKEN_PATH {settings.token_path}: "
                           f"cannot read: {exc}") from exc


def make_prom_client(settings: PromSettings) -> PrometheusConnect:
    """A PrometheusConnect with our TLS, timeout and retry settings.

    Raises ConfigError when an explicit token or CA file is unusable, so a typo fails at start
    and not at the first cycle.
    """
    if settings.token_path is not None and not Path(settings.token_path).is_file():
        raise ConfigError(f"INFERNO_PROMETHEUS_TOKEN_PATH {settings.token_path}: no such file")
    if not settings.may_send_token and SA_TOKEN.is_file():
        log.info("Prometheus URL %s is plain http: the service-account token is not sent "
                 "(INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN=true sends it)", settings.url)
    session = requests.Session()
    session.verify = tls_verify(settings)
    retry = Retry(total=settings.retries, backoff_factor=0.2,
                  status_forcelist=(429, 502, 503, 504), raise_on_status=False)
    return PrometheusConnect(url=settings.url.rstrip("/"), headers={}, retry=retry,
                             session=session, timeout=settings.timeout_s)
