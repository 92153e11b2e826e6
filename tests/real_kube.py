"""A real Kubernetes control plane for the tests and benchmarks whose behaviour kmock cannot show: admission
(OwnerReferencesPermissionEnforcement), RBAC as the chart's ServiceAccount, the Job, garbage-collector and TTL
controllers, resourceVersion conflicts, Lease arbitration, watch bookmarks.

It is `../shared/kube/`: kube-apiserver and kube-controller-manager 1.36, etcd from PATH (Debian's
`etcd-server`), and podrunner.py, a process kubelet that runs stage pods' commands as local processes. The
binaries follow the envtest convention: `KUBEBUILDER_ASSETS` names their directory when set (else
`../shared/kube/unpack.sh` unpacks them into a cache). Where the pieces are missing the lane skips with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
SHARED_KUBE = REPO.parent / "shared" / "kube"
VENV_BIN = Path(sys.executable).parent
KUBECTL = str(VENV_BIN / "kubectl") if (VENV_BIN / "kubectl").exists() else (shutil.which("kubectl") or "kubectl")
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  users: ["system:apiserver", "system:kube-controller-manager"]
- level: None
  userGroups: ["system:nodes"]
- level: Metadata
"""


def unavailable() -> Optional[str]:
    """Why the real-control-plane lane cannot run here, or None."""
    if not (SHARED_KUBE / "up.sh").exists():
        return f"no {SHARED_KUBE} (kube-apiserver, kube-controller-manager, podrunner): real-control-plane lane skipped"
    if shutil.which("etcd") is None:
        return "etcd not on PATH (Debian: apt-get install etcd-server): real-control-plane lane skipped"
    if shutil.which(KUBECTL) is None:
        return "no kubectl (make install puts one in .venv/bin): real-control-plane lane skipped"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealCluster:
    """One control plane under `state` (its own ports, so several can run at once); `up()`, then `down()`."""

    def __init__(self, state: Path, kcm_qps: int = 200, path: Optional[Path] = None):
        self.state = Path(state)
        self.kubeconfig = self.state / "admin.kubeconfig"
        self.audit_log = self.state / "audit.log"
        ap = _free_port()
        self.env = {
            **os.environ,
            "KUBE_STATE": str(self.state),
            "APISERVER_PORT": str(ap),
            "ETCD_PORT": str(_free_port()),
            "KCM_PORT": str(_free_port()),
            "PODRUNNER_LOG_PORT": str(_free_port()),
            "PODRUNNER_PYTHON": sys.executable,
            # a pod's PATH: stand-ins first (a served model's `vllm`), then the venv
            "PODRUNNER_PATH": ":".join(str(p) for p in (path, VENV_BIN) if p),
            "APISERVER_EXTRA_FLAGS": f"--enable-admission-plugins=OwnerReferencesPermissionEnforcement "
            f"--audit-policy-file={self.state}/audit-policy.yaml "
            f"--audit-log-path={self.audit_log} --audit-log-maxsize=0",
            "KCM_EXTRA_FLAGS": f"--kube-api-qps={kcm_qps} --kube-api-burst={2 * kcm_qps}",
        }
        etcd_port = int(self.env["ETCD_PORT"])
        while _port_taken(etcd_port + 10):  # up.sh puts etcd's peer port at +10
            etcd_port = _free_port()
        self.env["ETCD_PORT"] = str(etcd_port)
        if os.environ.get("KUBEBUILDER_ASSETS"):
            self.env["KUBE_BIN_CACHE"] = os.environ["KUBEBUILDER_ASSETS"]
        self.server = f"https://127.0.0.1:{ap}"

    # -- lifecycle
    def up(self) -> "RealCluster":
        self.state.mkdir(parents=True, exist_ok=True)
        (self.state / "audit-policy.yaml").write_text(AUDIT_POLICY)
        run = subprocess.run(
            ["bash", str(SHARED_KUBE / "up.sh"), "--podrunner"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if run.returncode:
            raise RuntimeError(f"up.sh failed: {run.stderr[-2000:]}")
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/safetyexperiments.lrmsafety.io",
            "crd/safetystudies.lrmsafety.io",
        )
        return self

    def down(self) -> None:
        subprocess.run(["bash", str(SHARED_KUBE / "down.sh")], env=self.env, capture_output=True, timeout=120)

    # -- faults: one component killed by its PID file, then up.sh starts only what is not alive
    def kill(self, component: str) -> None:
        """SIGKILL one of etcd, apiserver, kcm, podrunner (as a crash or a node's reboot would end it)."""
        import signal

        pid = int((self.state / "run" / f"{component}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), 30, f"{component} to die")

    def restart_missing(self) -> float:
        """up.sh again: it starts only the components that are not alive; seconds until the API answers."""
        start = time.monotonic()
        run = subprocess.run(
            ["bash", str(SHARED_KUBE / "up.sh"), "--podrunner"],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if run.returncode:
            raise RuntimeError(f"up.sh failed: {run.stderr[-2000:]}")
        return time.monotonic() - start

    def compact_etcd(self) -> int:
        """Compact etcd's history at its current revision (etcd's JSON gateway): a watch that resumes from an older
        resourceVersion is answered 410 Gone and must list afresh. Returns the revision."""
        import base64
        import urllib.request

        def post(path: str, body: dict) -> dict:
            req = urllib.request.Request(
                f"http://127.0.0.1:{self.env['ETCD_PORT']}/v3/{path}", data=json.dumps(body).encode(), method="POST"
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read())

        revision = int(post("kv/range", {"key": base64.b64encode(b"/").decode()})["header"]["revision"])
        post("kv/compaction", {"revision": revision, "physical": True})
        return revision

    def evict(self, namespace: str, pod: str) -> None:
        """The Eviction API (what a drain or the taint manager uses): the API server marks the pod DisruptionTarget,
        then deletes it."""
        from kubernetes import client

        self.core.create_namespaced_pod_eviction(
            pod, namespace, client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
        )

    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()

    # -- access
    def kubectl(
        self, *args: str, input: Optional[str] = None, check: bool = True, kubeconfig: Optional[Path] = None
    ) -> str:
        run = subprocess.run(
            [KUBECTL, f"--kubeconfig={kubeconfig or self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and run.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {run.stderr.strip()}")
        return run.stdout

    def clients(self, user_agent: str = "lrm-safety-test"):
        """(custom, batch, core, coordination) API clients as the admin."""
        from kubernetes import client, config

        api = config.new_client_from_config(str(self.kubeconfig))
        api.user_agent = user_agent
        return (
            client.CustomObjectsApi(api),
            client.BatchV1Api(api),
            client.CoreV1Api(api),
            client.CoordinationV1Api(api),
        )

    def namespace(self, name: str) -> None:
        self.kubectl("create", "namespace", name, check=False)

    # -- the chart's identity
    def install_chart_rbac(self, release_ns: str = "lrm-system", release: str = "lrm") -> str:
        """Everything the chart installs except the operator's Deployment (podrunner never runs it); returns the
        ServiceAccount's name."""
        import yaml

        helm = VENV_BIN / "helm"
        out = subprocess.run(
            [str(helm), "template", release, str(REPO / "charts" / "lrm-safety-operator"), "--namespace", release_ns],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        docs = [d for d in yaml.safe_load_all(out) if d and d.get("kind") != "Deployment"]
        self.namespace(release_ns)
        self.kubectl("apply", "-n", release_ns, "-f", "-", input="\n---\n".join(yaml.safe_dump(d) for d in docs))
        return next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")

    def sa_kubeconfig(self, sa: str, namespace: str) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (a bound token, as in a pod)."""
        token = self.kubectl("create", "token", sa, "-n", namespace, "--duration=4h").strip()
        path = self.state / f"{namespace}-{sa}.kubeconfig"
        cfg = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": self.server, "certificate-authority": str(self.state / "pki/ca.crt")},
                }
            ],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa, "namespace": namespace}}],
            "current-context": "sa",
        }
        path.write_text(json.dumps(cfg))
        return path

    # -- podrunner switches
    def switch(self, name: str, content: str = "") -> None:
        (self.state / name).write_text(content)

    def unswitch(self, name: str) -> None:
        (self.state / name).unlink(missing_ok=True)

    # -- what the API server saw
    def audit(self, since: int = 0) -> list[dict]:
        """Audit events (level Metadata, ResponseComplete) from byte offset `since`."""
        if not self.audit_log.exists():
            return []
        with open(self.audit_log, "rb") as f:
            f.seek(since)
            data = f.read()
        out = []
        for line in data.splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("stage") == "ResponseComplete":
                out.append(ev)
        return out

    def audit_mark(self) -> int:
        return self.audit_log.stat().st_size if self.audit_log.exists() else 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of ours counts as dead
        return not os.waitpid(pid, os.WNOHANG)[0]
    except ChildProcessError:
        return True


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_operator(kubeconfig: Path, log: Path, **env: str) -> subprocess.Popen:
    """`lrm-safety operator` as its own process, authenticated by `kubeconfig` (the chart's ServiceAccount)."""
    full = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "LRM_SAFETY_LIVENESS": "",
        "LRM_SAFETY_RESYNC_SECONDS": "300",
        "LRM_SAFETY_TICK_SECONDS": "1",
        **env,
    }
    full.pop("LRM_SAFETY_KUBE_SERVER", None)
    handle = open(log, "ab")
    return subprocess.Popen([str(VENV_BIN / "lrm-safety"), "operator"], env=full, stdout=handle, stderr=handle)


def stop_operator(op: subprocess.Popen) -> None:
    op.terminate()
    try:
        op.wait(20)
    except subprocess.TimeoutExpired:
        op.kill()
        op.wait()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    return wait_for(predicate, timeout, interval, what)
