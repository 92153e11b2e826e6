"""Docker cannot run here: parse the Dockerfiles and check what matters (pinned bases, non-root, no secrets)."""
import re
from pathlib import Path

import pytest

IMAGES = Path(__file__).resolve().parent.parent / "images"
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


@pytest.mark.parametrize("name", ["operator", "worker"])
def test_dockerfile(name):
    steps = parse(IMAGES / name / "Dockerfile")
    args = {}
    for op, rest in steps:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v.strip('"')
    base = next(rest for op, rest in steps if op == "FROM")
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), base)
    assert ":" in base and not base.endswith(":latest"), f"base image must be pinned: {base}"
    users = [rest for op, rest in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    for op, rest in steps:
        if op in ("ENV", "ARG"):
            assert not SECRET.search(rest), f"no secrets in {op}: {rest}"
    pins = [rest for op, rest in steps if op == "ARG" and rest.split("=")[0].endswith("_VERSION")]
    assert all("=" in p and p.split("=")[1] for p in pins)
    if name == "worker":
        assert {"TORCH_VERSION", "VLLM_VERSION", "DEEPSPEED_VERSION", "TORCH_CUDA_ARCH_LIST"} <= set(args)
        assert any(op == "VOLUME" and "/cache" in rest for op, rest in steps)
