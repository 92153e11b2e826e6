"""`kubectl sexp` on the day-one failures: an unreachable server, a missing kubeconfig, RBAC refusals (401, 403), a
cluster without the CRDs and a missing object. Each is one line naming what failed and the fix, a non-zero exit
and no traceback, in seconds. A small HTTP server stands in for the API server's error responses (the real API
server's are checked in tests/test_operator_real.py)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

BIN = Path(sys.executable).parent
FORBIDDEN = (
    'safetyexperiments.lrmsafety.io "exp" is forbidden: User "alice" cannot get resource "safetyexperiments" '
    'in API group "lrmsafety.io" in the namespace "denied"'
)


class ApiErrors(BaseHTTPRequestHandler):
    """The API server's answers for the failures above, chosen by namespace and token."""

    def do_GET(self):
        parts = self.path.split("?")[0].strip("/").split("/")
        ns = parts[parts.index("namespaces") + 1] if "namespaces" in parts else ""
        if self.headers.get("Authorization") == "Bearer expired":
            return self.status(401, {"reason": "Unauthorized", "message": "Unauthorized"})
        if ns == "denied":
            return self.status(
                403,
                {
                    "reason": "Forbidden",
                    "message": FORBIDDEN,
                    "details": {"name": "exp", "group": "lrmsafety.io", "kind": "safetyexperiments"},
                },
            )
        if ns == "nocrd":  # no CRD: the group's path is unknown, and the answer is not a Status
            body = b"404 page not found\n"
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self.wfile.write(body)
        return self.status(
            404,
            {
                "reason": "NotFound",
                "message": f'safetyexperiments.lrmsafety.io "{parts[-1]}" not found',
                "details": {"name": parts[-1], "group": "lrmsafety.io", "kind": "safetyexperiments"},
            },
        )

    def status(self, code, extra):
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, **extra}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ApiErrors)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def kubeconfig(tmp_path, server_url, token="t", namespace="research") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "lab",
                "clusters": [{"name": "c", "cluster": {"server": server_url}}],
                "users": [{"name": "me", "user": {"token": token}}],
                "contexts": [{"name": "lab", "context": {"cluster": "c", "user": "me", "namespace": namespace}}],
            }
        )
    )
    return path


def sexp(*args, env=None):
    start = time.monotonic()
    r = subprocess.run(
        [str(BIN / "kubectl-sexp"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    r.seconds = time.monotonic() - start
    return r


def one_line(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert r.seconds < 10, r.seconds
    return lines[0]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("cmd", [["status", "x"], ["logs", "x"], ["report", "x"], ["studies"], ["studies", "x"]])
def test_unreachable_server_is_one_line_naming_it(cmd, tmp_path):
    url = f"https://127.0.0.1:{closed_port()}"
    one_line(
        sexp("--kubeconfig", kubeconfig(tmp_path, url), *cmd),
        1,
        f"cannot reach the Kubernetes API server {url}",
        "Connection refused",
    )


def test_missing_kubeconfig_names_the_path(tmp_path):
    one_line(sexp("status", "x", "--kubeconfig", tmp_path / "nope"), 1, f"kubeconfig {tmp_path / 'nope'}: no such file")
    env = {"KUBECONFIG": str(tmp_path / "gone"), "KUBERNETES_SERVICE_HOST": ""}
    one_line(sexp("status", "x", env=env), 1, f"no kubeconfig: {tmp_path / 'gone'} exists", "set KUBECONFIG")


def test_unknown_context_names_it(tmp_path, server):
    one_line(sexp("status", "x", "--kubeconfig", kubeconfig(tmp_path, server), "--context", "prod"), 1, "prod")


def test_forbidden_names_user_verb_resource_namespace_and_the_role(tmp_path, server):
    line = one_line(
        sexp("status", "exp", "-n", "denied", "--kubeconfig", kubeconfig(tmp_path, server)),
        1,
        "RBAC does not let alice get safetyexperiments in namespace 'denied'",
        "-lrm-safety-operator-view",
        "kubectl create rolebinding lrm-safety-view -n denied --clusterrole=view --user=alice",
    )
    assert "forbidden" in line


def test_expired_credentials(tmp_path, server):
    one_line(
        sexp("studies", "--kubeconfig", kubeconfig(tmp_path, server, token="expired")),
        1,
        f"the API server {server} refused the kubeconfig's credentials (401 Unauthorized)",
    )


@pytest.mark.parametrize(
    "cmd,api",
    [(["status", "x"], "safetyexperiments"), (["studies"], "safetystudies"), (["studies", "s"], "safetystudies")],
)
def test_missing_crd_says_install_the_chart(cmd, api, tmp_path, server):
    one_line(
        sexp(*cmd, "-n", "nocrd", "--kubeconfig", kubeconfig(tmp_path, server)),
        1,
        f"the {api} API (lrmsafety.io/v1alpha1) is not installed on {server}",
        "helm install",
    )


def test_missing_object_names_it_and_how_to_list(tmp_path, server):
    one_line(
        sexp("status", "gone", "--kubeconfig", kubeconfig(tmp_path, server)),
        1,
        "safetyexperiment 'gone' not found in namespace 'research'",
        "kubectl get sexp -n research",
    )


def test_debug_shows_the_traceback(tmp_path):
    r = sexp("--debug", "status", "x", "--kubeconfig", tmp_path / "nope")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_no_command_says_what_to_type_and_every_option_has_help():
    r = sexp()
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip().splitlines()[-1]
        == "error: name a command: status, logs, report or studies (kubectl sexp COMMAND --help)"
    )
    for cmd in ("status", "logs", "report", "studies"):
        out = sexp(cmd, "--help").stdout
        options = [ln for ln in out.split("options:")[1].splitlines() if ln.strip().startswith("-")]
        assert options, out
        for opt in options:  # every option says what it means (on its line or the next)
            block = out.split(opt, 1)[1].split("\n  -", 1)[0]
            assert len((opt + block).split()) > 3, (cmd, opt)
