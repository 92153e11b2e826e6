"""The images: Dockerfiles read for what matters, the worker lock resolved for the image's platform, and the
operator image built and run for real (buildah/podman here, Docker where a daemon answers)."""

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from packaging.requirements import Requirement

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "images"
LOCK = IMAGES / "worker" / "requirements.lock"
SECRET = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|ACCESS_KEY)", re.I)


def parse(path: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


def build_args(steps) -> dict:
    args = {}
    for op, rest in steps:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v.strip('"')
    return args


def lock_pins() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


@pytest.mark.parametrize("name", ["operator", "worker"])
def test_dockerfile(name):
    steps = parse(IMAGES / name / "Dockerfile")
    args = build_args(steps)
    base = next(rest for op, rest in steps if op == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), base)
    assert ":" in base and not base.endswith(":latest"), f"base image must be pinned: {base}"
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must run as a non-root user"
    for op, rest in steps:
        if op in ("ENV", "ARG"):
            assert not SECRET.search(rest), f"no secrets in {op}: {rest}"
    runs = " ".join(rest for op, rest in steps if op == "RUN")
    assert "pip check" in runs, "the build must fail on conflicting packages"
    if name == "worker":
        assert {"TORCH_VERSION", "TORCH_CUDA_ARCH_LIST"} <= set(args)
        assert any(op == "VOLUME" and "/cache" in rest for op, rest in steps)


def test_operator_user_is_not_debians_operator_group():
    """Every Debian base has a group `operator` (gid 37): `useradd operator` fails there with exit 9."""
    runs = " ".join(rest for op, rest in parse(IMAGES / "operator" / "Dockerfile") if op == "RUN")
    added = re.findall(r"useradd\b[^&]*?\s([a-z_][a-z0-9_-]*)\s*(?:&&|$)", runs)
    assert added and "operator" not in added, added
    assert "--uid 10001" in runs  # the chart's securityContext.runAsUser


@pytest.mark.parametrize("name", ["operator", "worker"])
def test_images_install_only_their_lock(name):
    """One resolver run over the lock; no version chosen in the Dockerfile but the torch the worker checks."""
    steps = parse(IMAGES / name / "Dockerfile")
    runs = [rest for op, rest in steps if op == "RUN"]
    installs = [seg.strip() for r in runs for seg in r.split("&&") if re.search(r"\bpip install\b", seg)]
    assert installs, "the worker installs packages"
    for seg in installs:
        assert "requirements" in seg and ".lock" in seg or "--no-deps" in seg, f"installs outside the lock: {seg}"
        assert not re.search(r"[A-Za-z0-9]==\d", seg), f"a pin of its own: {seg}"
    assert any("-r /tmp/requirements" in seg for seg in installs)
    assert (IMAGES / name / "requirements.lock").is_file()


def test_worker_torch_is_the_locks():
    args = build_args(parse(IMAGES / "worker" / "Dockerfile"))
    assert args["TORCH_VERSION"] == lock_pins()["torch"], "the Dockerfile's TORCH_VERSION differs from the lock"


def test_worker_builds_deepspeed_ops_for_cuda_and_checks_them():
    """A build machine without a GPU picks DeepSpeed's CPU accelerator unless told: the CUDA ops would be skipped."""
    runs = " ".join(rest for op, rest in parse(IMAGES / "worker" / "Dockerfile") if op == "RUN")
    assert "DS_ACCELERATOR=cuda" in runs
    for op in ("FUSED_ADAM", "CPU_ADAM"):
        assert f"DS_BUILD_{op}=1" in runs
        assert f"'{op.lower()}'" in runs, f"the build does not check that {op.lower()} was prebuilt"
    assert "installed_ops" in runs


def test_worker_base_matches_torch_cuda_major():
    """DeepSpeed compiles its ops with the base's nvcc: its CUDA major must be the one torch was built with."""
    args = build_args(parse(IMAGES / "worker" / "Dockerfile"))
    base_cuda = re.search(r"cuda:(\d+)\.", args["CUDA_IMAGE"]).group(1)
    pins = lock_pins()
    runtime = pins.get("nvidia-cuda-runtime") or pins.get(f"nvidia-cuda-runtime-cu{base_cuda}")
    assert runtime and runtime.split(".")[0] == base_cuda, (args["CUDA_IMAGE"], runtime)
    assert "ubuntu24.04" in args["CUDA_IMAGE"], "Ubuntu 24.04 ships a released CPython 3.12"


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_pyproject_ranges_hold_the_lock_and_are_bounded():
    """pyproject's worker/gpu ranges admit the lock's versions, and the ML stack has upper bounds."""
    pins = lock_pins()
    bounded = {"torch", "transformers", "trl", "peft", "accelerate", "datasets", "vllm", "deepspeed", "liger-kernel"}
    for spec in _extras()["worker"] + _extras()["gpu"]:
        req = Requirement(spec)
        name = req.name.lower()
        assert name in pins, f"{name} is not in the lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{spec} excludes the lock's {name}=={pins[name]}"
        if name in bounded:
            assert any(s.operator in ("<", "<=", "==", "~=") for s in req.specifier), f"{spec} has no upper bound"


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _uv() -> str:
    uv = shutil.which("uv", path=str(REPO / ".venv" / "bin")) or shutil.which("uv")
    if not uv:
        pytest.skip("uv missing: it comes with the dev extra (make test installs it)")
    if not _pypi_reachable() and os.environ.get("CI") != "true":
        pytest.skip("PyPI unreachable: the lock is resolved against the index")
    return uv


def test_image_locks_resolve_for_the_image_platforms():
    """The committed locks resolve on their own for their images' Python and platform, from metadata alone."""
    r = subprocess.run(
        ["bash", "scripts/image_locks.sh", "--check", _uv()], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "worker/requirements.lock resolves for CPython 3.12" in r.stdout
    assert "operator/requirements.lock resolves for CPython 3.11" in r.stdout


def test_worker_lock_check_fails_on_a_conflict(tmp_path):
    """The torch the old Dockerfile asked for beside vLLM: the check must refuse it, naming the conflict."""
    bad = tmp_path / "requirements.lock"
    text = LOCK.read_text()
    assert "\ntorch==" in text
    bad.write_text(re.sub(r"\ntorch==\S+", "\ntorch==2.9.1", text))
    r = subprocess.run(
        ["bash", "scripts/image_locks.sh", "--check", _uv()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "WORKER_LOCK": str(bad)},
    )
    assert r.returncode != 0
    assert "torch" in r.stderr


def _can_build() -> str | None:
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return None
    if not shutil.which("buildah") or not shutil.which("podman"):
        return "no Docker daemon and no buildah/podman (apt-get install buildah podman debootstrap runc)"
    if os.geteuid() != 0:
        return "buildah with --isolation chroot needs root here"
    if not shutil.which("debootstrap"):
        return "debootstrap missing: the base cannot be pulled here, and is made from Debian packages"
    return None


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_operator_image_builds_and_runs():
    """Build the operator image as `make images` does, then run it hardened (scripts/build_images.sh --check)."""
    reason = _can_build()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "REGISTRY": "localhost/lrm-safety-test"}
    r = subprocess.run(
        ["bash", "scripts/build_images.sh", "--check", "--base-from-debian", "operator"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=env,
        timeout=1100,
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert re.search(r"built localhost/lrm-safety-test/operator:\S+ with \w+ in \d+ s, \d+ MB", out), out[-2000:]
    for line in ("--help exits 0 with a read-only root", "runs as uid 10001", "the handlers import"):
        assert line in out, out[-2000:]
    print(re.search(r"built localhost\S+ with .*", out).group(0))
