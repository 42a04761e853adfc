"""Live-mode settings: environment variables, kubeconfig loading, Prometheus client options."""

from __future__ import annotations

from pathlib import Path

import pytest
from kube_emulator import EmulatorThread

from inferno.errors import CollectError, ConfigError
from live.config import (
    KubeSettings,
    PromSettings,
    kube_settings_from_env,
    load_api_client,
    make_prom_client,
    prom_settings_from_env,
    read_bearer_token,
    tls_verify,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_env_defaults_follow_upstream() -> None:
    """Unset variables: in-cluster, all namespaces, http://localhost:9090, window 1m."""
    assert kube_settings_from_env({}) == KubeSettings(kubeconfig="", watch_namespace="")
    prom = prom_settings_from_env({})
    assert (prom.url, prom.window, prom.token_path, prom.ca_path, prom.insecure) == (
        "http://localhost:9090", "1m", None, None, False)


def test_env_values_are_read() -> None:
    """Every documented variable reaches its setting."""
    env = {"KUBECONFIG": "/k", "WATCH_NAMESPACE": "infer",
           "INFERNO_PROMETHEUS_URL": "https://thanos:9091", "INFERNO_PROMETHEUS_WINDOW": "2m",
           "INFERNO_PROMETHEUS_TOKEN_PATH": "/t", "INFERNO_PROMETHEUS_CA_PATH": "/ca",
           "INFERNO_PROMETHEUS_INSECURE": "true",
           "INFERNO_PROMETHEUS_DEPLOYMENT_LABEL": "inferno_deployment"}
    assert kube_settings_from_env(env) == KubeSettings(kubeconfig="/k", watch_namespace="infer")
    assert prom_settings_from_env(env) == PromSettings(
        url="https://thanos:9091", window="2m", token_path="/t", ca_path="/ca", insecure=True,
        deployment_label="inferno_deployment")


@pytest.mark.parametrize(("name", "value"), [
    ("INFERNO_PROMETHEUS_WINDOW", "1 minute"),
    ("INFERNO_PROMETHEUS_URL", "localhost:9090"),
    ("INFERNO_PROMETHEUS_INSECURE", "maybe"),
], ids=["window", "url", "insecure"])
def test_bad_env_value_names_the_variable(name: str, value: str) -> None:
    """A bad value raises ConfigError naming the variable and the value."""
    with pytest.raises(ConfigError, match=f"{name}.*{value}"):
        prom_settings_from_env({name: value})


def test_kubeconfig_points_client_at_server(kube_emulator: EmulatorThread,
                                            kubeconfig: Path) -> None:
    """A kubeconfig file yields a client whose host is that file's server."""
    client = load_api_client(KubeSettings(kubeconfig=str(kubeconfig)))
    try:
        assert client.configuration.host == kube_emulator.url
    finally:
        client.close()


def test_missing_kubeconfig_file_is_config_error(tmp_path: Path) -> None:
    """A KUBECONFIG path that does not exist is a ConfigError naming the path."""
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="nope"):
        load_api_client(KubeSettings(kubeconfig=str(missing)))


def test_empty_kubeconfig_outside_a_pod_is_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Empty KUBECONFIG means in-cluster; outside a pod that is a ConfigError saying so."""
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="KUBECONFIG is empty, there is no ~/.kube/config"):
        load_api_client(KubeSettings(kubeconfig=""))


@pytest.mark.parametrize(("kubeconfig_env", "has_home_file", "expected"), [
    (None, True, "home"), ("", True, "home"), (None, False, ""), ("/k", True, "/k"),
    ("/a:/b", False, "/a:/b"),
], ids=["unset-home", "empty-home", "unset-in-cluster", "explicit", "list"])
def test_kubeconfig_resolution_is_kubectls(tmp_path: Path, kubeconfig_env: str | None,
                                           has_home_file: bool, expected: str) -> None:
    """KUBECONFIG if set and not empty, else ~/.kube/config if it exists, else in-cluster."""
    home_file = tmp_path / ".kube" / "config"
    if has_home_file:
        home_file.parent.mkdir()
        home_file.write_text("apiVersion: v1\n")
    env = {"HOME": str(tmp_path)}
    if kubeconfig_env is not None:
        env["KUBECONFIG"] = kubeconfig_env
    want = str(home_file) if expected == "home" else expected
    assert kube_settings_from_env(env).kubeconfig == want


def test_home_kubeconfig_reaches_the_emulator(kube_emulator: EmulatorThread,
                                              kubeconfig: Path, tmp_path: Path) -> None:
    """With KUBECONFIG unset, ~/.kube/config is loaded (kubectl's default)."""
    (tmp_path / ".kube").mkdir()
    (tmp_path / ".kube" / "config").write_text(kubeconfig.read_text())
    client = load_api_client(kube_settings_from_env({"HOME": str(tmp_path)}))
    try:
        assert client.configuration.host == kube_emulator.url
        assert client.configuration.retries is False  # our retries, bounded by the cycle
    finally:
        client.close()


def test_token_over_plain_http_needs_an_explicit_mark(tmp_path: Path) -> None:
    """An explicit token file with an http URL is refused at start unless the URL is marked;
    with https, or marked, the token is read."""
    token = tmp_path / "token"
    token.write_text("secret")
    with pytest.raises(ConfigError, match="INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN"):
        PromSettings(url="http://prometheus:9090", token_path=str(token))
    marked = prom_settings_from_env({"INFERNO_PROMETHEUS_URL": "http://prometheus:9090",
                                     "INFERNO_PROMETHEUS_TOKEN_PATH": str(token),
                                     "INFERNO_PROMETHEUS_ALLOW_HTTP_TOKEN": "true"})
    assert read_bearer_token(marked) == "secret"
    assert read_bearer_token(PromSettings(url="https://p:9091", token_path=str(token))) == "secret"


def test_service_account_token_is_never_read_for_plain_http(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service-account default: sent to https, not to http (unless marked)."""
    sa_token = tmp_path / "sa-token"
    sa_token.write_text("sa-secret")
    monkeypatch.setattr("live.config.SA_TOKEN", sa_token)
    assert read_bearer_token(PromSettings(url="http://p:9090")) is None
    assert read_bearer_token(PromSettings(url="https://p:9091")) == "sa-secret"
    assert read_bearer_token(PromSettings(url="http://p:9090", allow_http_token=True)) == (
        "sa-secret")


def test_token_file_is_reread_every_time(tmp_path: Path) -> None:
    """The bearer token follows the file (rotating tokens), stripped of whitespace."""
    token = tmp_path / "token"
    token.write_text("first\n")
    settings = PromSettings(url="https://p:9091", token_path=str(token))
    assert read_bearer_token(settings) == "first"
    token.write_text("second")
    assert read_bearer_token(settings) == "second"
    token.unlink()
    with pytest.raises(CollectError, match="INFERNO_PROMETHEUS_TOKEN_PATH"):
        read_bearer_token(settings)


def test_explicit_token_file_must_exist_at_start(tmp_path: Path) -> None:
    """An explicit token path that does not exist fails when the client is built."""
    with pytest.raises(ConfigError, match="INFERNO_PROMETHEUS_TOKEN_PATH"):
        make_prom_client(PromSettings(url="https://p:9091", token_path=str(tmp_path / "missing")))


def test_tls_verification_choices(tmp_path: Path) -> None:
    """insecure → no verification; explicit CA → that bundle; plain http → system default."""
    ca = tmp_path / "ca.crt"
    ca.write_text(PEM)
    assert tls_verify(PromSettings(url="https://p:9091", insecure=True)) is False
    assert tls_verify(PromSettings(url="https://p:9091", ca_path=str(ca))) == str(ca)
    assert tls_verify(PromSettings(url="http://p:9090")) is True


@pytest.mark.parametrize("content", ["not a certificate", None], ids=["no-pem", "missing"])
def test_unusable_explicit_ca_is_config_error(tmp_path: Path, content: str | None) -> None:
    """An explicit CA file that is missing or holds no PEM certificate is a ConfigError."""
    ca = tmp_path / "ca.crt"
    if content is not None:
        ca.write_text(content)
    with pytest.raises(ConfigError, match="INFERNO_PROMETHEUS_CA_PATH"):
        tls_verify(PromSettings(url="https://p:9091", ca_path=str(ca)))
