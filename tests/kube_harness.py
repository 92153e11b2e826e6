"""A kmock Kubernetes API emulator and the real kopf operator, each in its own thread and event loop."""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import threading

import jsonpatch
import jsonpointer
import kmock
from kmock import ResourceInfo

from lrm_safety.spec import API_GROUP, API_VERSION, KIND, PLURAL
from waiting import wait_for  # noqa: F401  (the tests import it from here)

# The operator's timers are set when its handlers are imported: fast wake-ups for tests.
os.environ.setdefault("LRM_SAFETY_RESYNC_SECONDS", "1")
os.environ.setdefault("LRM_SAFETY_TICK_SECONDS", "0.3")
os.environ.setdefault("LRM_SAFETY_PROGRESS_SECONDS", "0.5")


class _ApiServer(kmock.KubernetesEmulator):
    """kmock plus what the API server does on writes, which kopf relies on: a unique uid, a generation, and a new
    resourceVersion on every create and patch (kopf's JSON patches test it), and a JSON patch that does not
    apply answered 422, as kopf expects (kmock answers 500 and keeps the same resourceVersion, so kopf would
    retry a stale finalizer removal nine times with backoff)."""

    _versions = itertools.count(2)
    _version = 1  # the newest resourceVersion handed out: a list's resourceVersion

    async def _handle(self, request):
        data = request.data
        if request.resource is not None and request.action == kmock.action.CREATE and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            # unique per object as the API server's are: kopf keys its indices by (namespace, name, uid), so a
            # Deployment and the Service of the same name sharing a uid would purge each other from the indices
            meta.setdefault("uid", f"uid-{str(data.get('kind') or 'object').lower()}-{meta.get('name')}")
            meta.setdefault("generation", 1)
            meta["resourceVersion"] = self._next_version()
        elif request.resource is not None and request.action == kmock.action.UPDATE and request.name is not None:
            version = self._next_version()
            if isinstance(data, list):
                key = (request.resource, request.namespace, request.name)
                if key in self._objects and not self._objects[key].deleted:
                    try:
                        jsonpatch.apply_patch(copy.deepcopy(dict(self._objects[key].raw)), data)
                    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as e:
                        raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e
                data.append({"op": "add", "path": "/metadata/resourceVersion", "value": version})
            elif isinstance(data, dict):
                data.setdefault("metadata", {})["resourceVersion"] = version
        return await super()._handle(request)

    def _next_version(self) -> str:
        type(self)._version = next(self._versions)
        return str(self._version)

    async def _serve_list(self, request):
        """kmock's list with a real resourceVersion, for the watch that follows it."""
        async with self._lock:
            listed = str(self._version)
        result = await super()._serve_list(request)
        return {**result, "metadata": {**result.get("metadata", {}), "resourceVersion": listed}}

    async def _serve_watch(self, request):
        """A watch as the API server serves one: from the list's resourceVersion, nothing sent twice and nothing
        lost. kmock sends every current object as ADDED again, then subscribes to its event bus, so a write in
        between was never streamed; kopf, handed a stale duplicate, failed a guarded patch and waited for an
        event that never came. Here the bus is marked under the same lock as the snapshot (writes publish
        under it too), and the snapshot holds only objects changed since the list."""
        yield b""
        since = (
            int(request.params.get("resourceVersion") or 0)
            if str(request.params.get("resourceVersion") or "0").isdigit()
            else 0
        )
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()
            current = [
                obj.raw
                for (resource, namespace, name), obj in self.objects.items()
                if not obj.deleted
                and _watched(request, resource, namespace, name)
                and int(obj.raw.get("metadata", {}).get("resourceVersion") or 0) > since
            ]
        for raw in current:
            yield {"type": "ADDED" if since == 0 else "MODIFIED", "object": raw}
        async for event in bus.stream(since=mark):
            meta = (event.get("object") or {}).get("metadata") or {}
            if _watched(request, request.resource, meta.get("namespace"), meta.get("name")):
                yield event


def _watched(request, resource, namespace, name) -> bool:
    return resource == request.resource and request.namespace in (None, namespace) and request.name in (None, name)


class EmulatedCluster:
    """kmock serving the CRD plus builtin resources. No Job controller: tests move Job status themselves."""

    def __init__(self):
        self.url = None
        self.emulator = None
        self._ready = threading.Event()
        self._stop = None
        self._loop = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self):
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())

    async def _serve(self):
        self._stop = asyncio.Event()
        emulator = _ApiServer()
        emulator.resources.load_bundled()
        emulator.resources[f"{API_GROUP}/{API_VERSION}/{PLURAL}"] = ResourceInfo(
            kind=KIND,
            singular=KIND.lower(),
            namespaced=True,
            shortnames={"sexp"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"},
        )
        emulator.resources[f"{API_GROUP}/{API_VERSION}/safetystudies"] = ResourceInfo(
            kind="SafetyStudy",
            singular="safetystudy",
            namespaced=True,
            shortnames={"sstudy"},
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources={"status"},
        )
        async with emulator, kmock.Server(emulator) as server:
            self.emulator = emulator
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self):
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("kmock did not start")
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


class OperatorThread:
    """The real operator (kopf) against the emulator; stop() and start again to simulate a restart."""

    def __init__(self, url: str, resync: float = 1.0, **settings):
        self.url = url
        self.resync = resync
        self.settings = settings  # more Settings fields, e.g. worker=WorkerDefaults(...) as the chart's env sets
        self.thread = None
        self.stop_flag = None
        self.error = None

    def start(self):
        from safety_operator.controller import Controller
        from safety_operator.settings import Settings

        os.environ["LRM_SAFETY_KUBE_SERVER"] = self.url
        self.stop_flag, ready = threading.Event(), threading.Event()
        settings = Settings(
            resync_seconds=self.resync,
            workers=4,
            tick_seconds=float(os.environ["LRM_SAFETY_TICK_SECONDS"]),
            progress_seconds=float(os.environ["LRM_SAFETY_PROGRESS_SECONDS"]),
            **self.settings,
        )

        self.controller = Controller(settings)  # a fresh operator per start: nothing carried over in modules

        def target():
            from safety_operator import main

            try:
                main.run(settings, stop_flag=self.stop_flag, ready_flag=ready, controller=self.controller)
            except Exception as e:  # surfaced by the tests
                self.error = e

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        if not ready.wait(30):
            raise RuntimeError(f"operator did not become ready: {self.error!r}")
        return self

    def stop(self):
        self.stop_flag.set()
        self.thread.join(30)
