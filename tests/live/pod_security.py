"""The Pod Security Standards (Kubernetes docs, "Pod Security Standards", v1.30+), applied to a
pod spec as the ``restricted`` level of the PodSecurity admission controller checks it.

Each rule returns the violations it finds, as "field: what is wrong". Baseline rules are part
of restricted. Written from the published table of controls; the checks name the same fields.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"})
SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t",
                           "container_engine_t"})
RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                "persistentVolumeClaim", "projected", "secret"})


def _containers(pod: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(kind) or ():
            yield f"{kind}[{container.get('name', '?')}]", container


def _baseline(pod: Mapping[str, Any]) -> Iterator[str]:
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            yield f"spec.{field}: must be unset or false"
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        yield "securityContext.windowsOptions.hostProcess: must be unset or false"
    for volume in pod.get("volumes") or ():
        if "hostPath" in volume:
            yield f"volumes[{volume.get('name')}].hostPath: not allowed"
    sysctls = {s.get("name") for s in psc.get("sysctls") or ()}
    for name in sorted(sysctls - SAFE_SYSCTLS):
        yield f"securityContext.sysctls[{name}]: not a safe sysctl"
    contexts = [("pod", psc)] + [(where, c.get("securityContext") or {})
                                 for where, c in _containers(pod)]
    for where, sc in contexts:
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            yield f"{where}.securityContext.seccompProfile: Unconfined not allowed"
        selinux = sc.get("seLinuxOptions") or {}
        if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get(
                "role"):
            yield f"{where}.securityContext.seLinuxOptions: not allowed"
        apparmor = (sc.get("appArmorProfile") or {}).get("type")
        if apparmor not in (None, "RuntimeDefault", "Localhost"):
            yield f"{where}.securityContext.appArmorProfile: {apparmor} not allowed"
    for where, container in _containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("privileged"):
            yield f"{where}.securityContext.privileged: must be unset or false"
        if sc.get("procMount", "Default") != "Default":
            yield f"{where}.securityContext.procMount: must be Default"
        for cap in (sc.get("capabilities") or {}).get("add") or ():
            if cap not in BASELINE_CAPABILITIES:
                yield f"{where}.securityContext.capabilities.add: {cap} not allowed"
        for port in container.get("ports") or ():
            if port.get("hostPort"):
                yield f"{where}.ports.hostPort: must be unset or 0"


def _restricted(pod: Mapping[str, Any]) -> Iterator[str]:
    psc = pod.get("securityContext") or {}
    for volume in pod.get("volumes") or ():
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            yield f"volumes[{volume.get('name')}]: type {sorted(kinds)} not allowed"
    if psc.get("runAsUser") == 0:
        yield "securityContext.runAsUser: must not be 0"
    for where, container in _containers(pod):
        sc = container.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            yield f"{where}.securityContext.allowPrivilegeEscalation: must be false"
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if non_root is not True:
            yield f"{where}: runAsNonRoot must be true (pod or container)"
        if sc.get("runAsUser") == 0:
            yield f"{where}.securityContext.runAsUser: must not be 0"
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            yield f"{where}: seccompProfile.type must be RuntimeDefault or Localhost"
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or ()):
            yield f"{where}.securityContext.capabilities.drop: must include ALL"
        for cap in caps.get("add") or ():
            if cap != "NET_BIND_SERVICE":
                yield f"{where}.securityContext.capabilities.add: only NET_BIND_SERVICE allowed"


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """Every violation of the ``restricted`` level (baseline included) by a pod spec."""
    return [*_baseline(pod), *_restricted(pod)]
