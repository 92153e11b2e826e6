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
from lrm_safety.wording import Wording
from lrm_safety.wording import locate as locate_words
from lrm_safety.wording import resolve as resolve_wording


@dataclass
class StageContext:
    exp: Experiment
    base_dir: Path = field(default_factory=Path.cwd)
    _store: Optional[Store] = None
    local_inputs: bool = True
    """Digest local input paths for reuse lookups (the operator cannot see the pods' files: False there)."""
    _resolved: dict = field(default_factory=dict)
    _wording: Optional[Wording] = None

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

    def hash(self, stage: str, read: bool = True) -> str:
        """Each stage's hash covers its own config and the hashes of the stages it reads, so a change reruns
        downstream; a stage that reads no upstream (mix on existing files) does not depend on it. `read` False
        hashes where the words would come from instead of the words themselves (work ids, render: no I/O)."""
        s = self.spec
        extra = [w] if (w := self._words_part(stage, read)) else []
        if stage == "distill":
            return config_hash("distill", s.teacher, self.distill_in_force(read), *extra)
        if stage == "mix":
            return config_hash(
                "mix",
                s.mix,
                s.student.model,
                s.train.max_length,
                self.hash("distill", read) if self.mix_reads_distill() else None,
                *extra,
            )
        if stage == "train":
            return config_hash("train", s.student, s.train, self.hash("mix", read))
        if stage == "evaluate":
            return config_hash(
                "evaluate", s.evaluate, s.student, self.hash("train", read) if "train" in s.stages else None, *extra
            )
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

    def _words_part(self, stage: str, read: bool) -> Optional[dict]:
        """What the words add to a stage's hash: the release's change what the teacher, PAIR and the XSTest judge
        read (and the system prompt mix adds when asked); the project's add nothing, so hashes from before the
        import existed stay valid."""
        s = self.spec
        if s.prompts == "builtin" or not (stage in ("distill", "evaluate") or (stage == "mix" and s.mix.system_prompt)):
            return None
        if not read:
            return {"prompts": s.prompts, "file": locate_words(s)[0]}
        return {"wording": self.wording.digest()} if self.wording.release else None

    def distill_in_force(self, read: bool = True):
        """spec.distill with the fixed refusal filled in from the words in force (so the hash follows the text)."""
        d = self.spec.distill
        if d.rectify.refusal_text or not read:
            return d
        refusal = self.wording.nocot_refusal()
        return d.model_copy(update={"rectify": d.rectify.model_copy(update={"refusal_text": refusal})})

    @property
    def wording(self) -> Wording:
        """The words in force (spec.prompts), read once: the release's import, or the project's."""
        if self._wording is None:
            self._wording = resolve_wording(self.spec, self._read_existing)
        return self._wording

    def _read_existing(self, uri: str) -> bytes:
        """A file's bytes; FileNotFoundError when it is not there (local or S3), other failures as they are."""
        from botocore.exceptions import ClientError

        try:
            return read_uri_bytes(uri, endpoint=self.spec.storage.endpoint, base_dir=self.base_dir)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "NoSuchBucket", "404"):
                raise FileNotFoundError(uri) from None
            raise

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
