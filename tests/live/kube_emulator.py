"""A Kubernetes API on 127.0.0.1 for the live tests: kmock's KubernetesEmulator, extended.

kmock 0.8 stores objects and serves list/get/create/patch/delete over HTTP, which is what the
official client needs. What it lacks, and this module adds:

- label selectors: list requests ignore ``labelSelector``; `InfernoEmulator` filters the items
  (equality, inequality, set-based ``in``/``notin``, existence and ``!key``);
- JSON-patch failures: a failed ``test``/``replace`` op surfaced as HTTP 500; here it is 422,
  as the real API server answers, so callers do not retry it;
- fault injection: `fail_next` makes the next N matching requests answer a Kubernetes Status
  with a chosen code (409, 429, 500, ...) *without* applying them (kmock's own reactions run
  after the object store was already changed, which is wrong for a conflict); `hang_next`
  makes them hang (a hung API server: connection accepted, no answer) until `clear`;
- a threaded runner: kmock is asyncio; `EmulatorThread` runs it on its own loop in a thread so
  the synchronous client (and the code under test) can call it, and writes a kubeconfig file.
"""

from __future__ import annotations

import asyncio
import copy
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import attrs
import jsonpatch
import jsonpointer
import kmock
import yaml

T = TypeVar("T")

DEPLOYMENTS = "apps/v1/deployments"
YAMLS = Path(__file__).resolve().parents[2] / "yamls"
KMOCK_RECENT = 16
"""Requests kept in kmock's own list; more than the requests in flight at once."""

_SET_EXPR = re.compile(r"^\s*(!?)([^\s!=,()]+)\s*(?:(notin|in)\s*\(([^)]*)\))?\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part.strip() for part in parts if part.strip()]


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Kubernetes label-selector semantics over one object's labels."""
    for requirement in _split_selector(selector):
        if "!=" in requirement:
            key, value = (s.strip() for s in requirement.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in requirement and not _SET_EXPR.match(requirement):
            key, value = (s.strip() for s in requirement.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        else:
            match = _SET_EXPR.match(requirement)
            if match is None:
                raise ValueError(f"unsupported label selector requirement {requirement!r}")
            negated, key, operator, values = match.groups()
            wanted = {v.strip() for v in (values or "").split(",") if v.strip()}
            if operator == "in" and labels.get(key) not in wanted:
                return False
            if operator == "notin" and labels.get(key) in wanted:
                return False
            if operator is None and (key in labels) == bool(negated):
                return False
    return True


@dataclass(slots=True)
class Fault:
    """Answer `count` more requests of `method` on a path matching `path` with `status`
    (status 0: never answer, until the emulator is cleared)."""

    method: str
    path: re.Pattern[str]
    status: int
    count: int
    headers: Mapping[str, str]


@attrs.define(kw_only=True)
class InfernoEmulator(kmock.KubernetesEmulator):
    """KubernetesEmulator plus label selectors, 422 on bad JSON patches and fault injection."""

    faults: list[Fault] = attrs.field(factory=list)
    log: list[kmock.Request] = attrs.field(factory=list)
    """Every request served, for assertions (kmock's own list is kept short, see below)."""
    release: asyncio.Event = attrs.field(factory=asyncio.Event)
    """Set by `clear`: hung requests end (with a 503) so no handler outlives its test."""

    async def _handle(self, request: kmock.Request) -> Any:
        # kmock matches each request against its reactions by scanning *all* recorded requests
        # (identity check), so a request costs O(requests so far): 100 requests in, a GET took
        # ~90 ms. Keeping only the newest few (the in-flight ones are the newest) makes it O(1).
        self.log.append(request)
        del self._requests[:-KMOCK_RECENT]
        for fault in self.faults:
            if (fault.count > 0 and request.method.value.upper() == fault.method.upper()
                    and fault.path.search(request.url.path)):
                fault.count -= 1
                if fault.status == 0:
                    await self.release.wait()
                    return aiohttp.web.Response(status=503, text="released")
                return aiohttp.web.json_response(
                    {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
                     "code": fault.status, "reason": "InjectedFault",
                     "message": f"injected {fault.status}"},
                    status=fault.status, headers=dict(fault.headers))
        try:
            return await super()._handle(request)
        except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
            raise kmock.KubernetesError(status=422, reason="Invalid",
                                        message=f"json patch: {exc}") from exc

    async def _serve_list(self, request: kmock.Request) -> Any:
        payload = await super()._serve_list(request)
        selector = request.params.get("labelSelector", "")
        if selector:
            payload["items"] = [
                item for item in payload["items"]
                if selector_matches(selector, item.get("metadata", {}).get("labels") or {})]
        return payload


class EmulatorThread:
    """Runs an InfernoEmulator over HTTP on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator",
                                        daemon=True)
        self.emulator: InfernoEmulator
        self._server: kmock.Server

    def start(self) -> None:
        """Start the loop thread and the HTTP server; returns when it accepts connections."""
        self._thread.start()
        self.call_async(self._enter)

    async def _enter(self) -> None:
        self.emulator = InfernoEmulator()
        self.emulator.resources[DEPLOYMENTS] = kmock.ResourceInfo(
            kind="Deployment", namespaced=True, singular="deployment",
            verbs={"get", "list", "watch", "patch", "update", "create", "delete"})
        await self.emulator.__aenter__()
        self._server = kmock.Server(self.emulator)
        await self._server.__aenter__()

    async def _exit(self) -> None:
        await self._server.__aexit__(None, None, None)
        await self.emulator.__aexit__(None, None, None)

    def stop(self) -> None:
        """Stop the server and the loop thread."""
        self.call_async(self._exit)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    def call_async(self, factory: Callable[[], Any]) -> Any:
        """Run the coroutine made by `factory` on the emulator's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(factory(), self._loop).result(timeout=30)

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the emulator's loop (serialised with request handling)."""
        async def run() -> T:
            async with self.emulator._lock:
                return fn()
        return self.call_async(run)

    # ---- object store, from the test thread ----

    def put_deployment(self, body: Mapping[str, Any]) -> None:
        """Store (or replace) a Deployment object as given."""
        meta = body["metadata"]
        key = (DEPLOYMENTS, meta["namespace"], meta["name"])

        def store() -> None:
            if key in self.emulator.objects:
                del self.emulator.objects[key]
            self.emulator.objects[key] = dict(body)
        self.call(store)

    def get_deployment(self, namespace: str, name: str) -> dict[str, Any]:
        """The stored Deployment as a plain dict."""
        return self.call(lambda: dict(self.emulator.objects[DEPLOYMENTS, namespace, name].raw))

    def clear(self) -> None:
        """Forget all objects, recorded requests and pending faults."""
        def wipe() -> None:
            for key in list(self.emulator.objects):
                del self.emulator.objects[key]
            self.emulator._requests.clear()
            self.emulator.log.clear()
            self.emulator.faults.clear()
            self.emulator.release.set()
            self.emulator.release = asyncio.Event()
        self.call(wipe)

    def fail_next(self, method: str, path_regex: str, status: int, count: int = 1,
                  headers: Mapping[str, str] | None = None) -> None:
        """Answer the next `count` matching requests with `status`, unapplied."""
        fault = Fault(method=method, path=re.compile(path_regex), status=status, count=count,
                      headers=dict(headers or {}))
        self.call(lambda: self.emulator.faults.append(fault))

    def hang_next(self, method: str, path_regex: str, count: int = 1_000_000) -> None:
        """Leave the next `count` matching requests unanswered until `clear` (a hung API)."""
        self.fail_next(method, path_regex, 0, count)

    def requests(self, method: str, path_regex: str = "") -> list[kmock.Request]:
        """Recorded requests of `method` whose path matches `path_regex`."""
        pattern = re.compile(path_regex)
        return self.call(lambda: [
            r for r in self.emulator.log
            if r.method.value.upper() == method.upper() and pattern.search(r.url.path)])

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose current context points at this emulator over plain HTTP."""
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-token"}}],
            "contexts": [{"name": "emulator",
                          "context": {"cluster": "emulator", "user": "tester"}}],
        }
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path


def workload_manifest(name: str) -> dict[str, Any]:
    """One of the sample Deployments under yamls/workload/ as a dict."""
    loaded: dict[str, Any] = yaml.safe_load((YAMLS / "workload" / name).read_text())
    return loaded


def deployment(namespace: str, name: str, labels: Mapping[str, str], *, replicas: int = 1,
               ready: int = 1) -> dict[str, Any]:
    """A complete Deployment object (as the API server would store it) with these labels."""
    body = copy.deepcopy(workload_manifest("dep1.yaml"))
    body["metadata"] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    body["spec"]["replicas"] = replicas
    body["spec"]["selector"] = {"matchLabels": {"app": name}}
    body["spec"]["template"]["metadata"]["labels"] = {"app": name}
    body["status"] = {"replicas": replicas, "readyReplicas": ready}
    return body


def managed_labels(server: str, **extra: str) -> dict[str, str]:
    """Minimal valid managed labels for `server` (model m1, accelerator A100)."""
    return {"inferno.server.managed": "true", "inferno.server.name": server,
            "inferno.server.model": "m1", "inferno.server.allocation.accelerator": "A100",
            **extra}
