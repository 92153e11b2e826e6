"""The experiment a stage works on: its spec, its store, its prefixes and config hashes, and its inputs. What every
stage, the local runner, `render --plan` and the reports share; finished work is found through reuse."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from lrm_safety.data import BUILTIN_DATA, SYNTHETIC_EVAL
from lrm_safety.errors import BadInput
from lrm_safety.spec import Experiment, config_hash
from lrm_safety.store import Store, open_store, parse_jsonl, read_uri_bytes


@dataclass
class StageContext:
    exp: Experiment
    base_dir: Path = field(default_factory=Path.cwd)
    _store: Optional[Store] = None
    local_inputs: bool = True
    """Digest local input paths for reuse lookups (the operator cannot see the pods' files: False there)."""
    _resolved: dict = field(default_factory=dict)

    @property
    def spec(self):
        return self.exp.spec

    @property
    def store(self) -> Store:
        if self._store is None:
            s = self.spec.storage
            self._store = open_store(s.uri, endpoint=s.endpoint, region=s.region, base_dir=self.base_dir)
        return self._store

    def prefix(self, stage: str) -> str:
        return f"{self.exp.name}/{stage}"

    def mix_reads_distill(self) -> bool:
        s = self.spec
        return "distill" in s.stages and (not s.mix.safety_source or s.mix.math_source == "distill")

    def hash(self, stage: str) -> str:
        """Each stage's hash covers its own config and the hashes of the stages it reads, so a change reruns
        downstream; a stage that reads no upstream (mix on existing files) does not depend on it."""
        s = self.spec
        if stage == "distill":
            return config_hash("distill", s.teacher, s.distill)
        if stage == "mix":
            return config_hash(
                "mix",
                s.mix,
                s.student.model,
                s.train.max_length,
                self.hash("distill") if self.mix_reads_distill() else None,
            )
        if stage == "train":
            return config_hash("train", s.student, s.train, self.hash("mix"))
        if stage == "evaluate":
            return config_hash("evaluate", s.evaluate, s.student, self.hash("train") if "train" in s.stages else None)
        raise ValueError(stage)

    def resolve(self, stage: str) -> Optional[tuple[str, dict]]:
        """(where the stage's files are, its manifest) when it is finished for this config, here or elsewhere."""
        from lrm_safety.reuse import resolve

        if stage not in self._resolved:
            found = resolve(self, stage, local=self.local_inputs)
            if found is None:
                return None
            self._resolved[stage] = found
        return self._resolved[stage]

    def is_done(self, stage: str) -> bool:
        return self.resolve(stage) is not None

    def artifacts(self, stage: str) -> str:
        """The prefix holding a finished stage's files: its own, or the experiment's whose output it reuses."""
        found = self.resolve(stage)
        return found[0] if found else self.prefix(stage)

    def require(self, stage: str) -> dict:
        """The upstream stage's manifest, or a clear error if it has not finished with this config."""
        found = self.resolve(stage)
        if found is None:
            raise BadInput(
                f"stage {stage} has not finished for this spec (no matching "
                f"{self.store.uri(self.prefix(stage))}/_SUCCESS.json); run it first"
            )
        return found[1]

    def read_text(self, uri: str) -> str:
        """A text file named in the spec (an instruction, a prompt)."""
        return read_input(uri, endpoint=self.spec.storage.endpoint, base_dir=self.base_dir).decode()

    def read_rows(self, uri: str) -> list[dict]:
        """Rows of a JSONL or JSON data file named by URI, path or builtin: name."""
        if uri == SYNTHETIC_EVAL:
            from lrm_safety.data.synthetic import synthetic_math

            # A seed far from any mix seed: evaluation problems the demo never trains on.
            return [{"problem": r["prompt"], "answer": r["reference"]} for r in synthetic_math(200, seed=1_000_003)]
        if uri in BUILTIN_DATA:
            data = BUILTIN_DATA[uri].read_bytes()
        elif uri.startswith("builtin:"):
            raise BadInput(f"unknown builtin data set {uri!r}; known: {', '.join(BUILTIN_DATA)}")
        else:
            data = read_input(uri, endpoint=self.spec.storage.endpoint, base_dir=self.base_dir)
        text = data.decode().strip()
        if text.startswith("["):
            return json.loads(text)
        return parse_jsonl(data)


def read_input(uri: str, *, endpoint: Optional[str] = None, base_dir: Path | str = ".") -> bytes:
    """An input file named in the spec; a missing one is bad input (no retry), an unreachable store is not."""
    from botocore.exceptions import ClientError

    try:
        return read_uri_bytes(uri, endpoint=endpoint, base_dir=base_dir)
    except FileNotFoundError:
        raise BadInput(f"{uri}: no such file; fix the path in the spec or upload the file") from None
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "NoSuchKey", "404", "AccessDenied", "403"):
            raise BadInput(f"{uri}: {code}; fix the path or the credentials in the spec") from None
        raise
