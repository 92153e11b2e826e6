"""Stage 1 and 2 sections: distillation (prompts, style, rectification, sampling, shards) and the safety + math mix."""

from __future__ import annotations

from typing import Optional

from pydantic import Field, model_validator

from lrm_safety.spec.base import COUNT_MAX, SEED_MAX, Labeller, OverlongPolicy, Style, _Model


class SamplingSpec(_Model):
    temperature: float = Field(0.6, ge=0.0, le=2.0)
    """Sampling temperature; 0 means greedy."""
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    """Nucleus sampling mass."""
    max_tokens: int = Field(4096, ge=1, le=131072)
    """Maximum new tokens per generation."""
    seed: int = Field(0, ge=0, le=SEED_MAX)
    """Sampling seed (per-sample seeds derive from it)."""
    batch_size: int = Field(16, ge=1, le=4096)
    """Prompts per generate call (transformers backend) or per request wave (openai backend)."""


class RectifySpec(_Model):
    """The study's three failure patterns of naive distillation, each with a knob. Unset knobs take the style's
    default: the `default` style is the study's naive baseline (nothing rectified), `improved` its rectified recipe."""

    safety_awareness: Optional[bool] = None
    """Give the teacher the style's safety instruction (pattern 1); default: true for every style that has one; false sends the raw prompt."""
    max_reasoning_tokens: Optional[int] = Field(None, ge=16, le=131072)
    """Overthinking cap (pattern 2) in teacher tokens, handled by overlong; default none: the release asks for brevity by instruction and caps nothing."""
    overlong: OverlongPolicy = OverlongPolicy.regenerate
    """What to do with reasoning over maxReasoningTokens: regenerate, truncate or drop."""
    consistency_filter: Optional[bool] = None
    """Reject samples whose reasoning concludes refusal while the answer complies, or the reverse, and compliant answers to prompts labelled harmful (pattern 3); default: on for improved, off for the other styles."""
    max_attempts: int = Field(3, ge=1, le=20)
    """Generation attempts per prompt before the sample is rejected."""
    keep_truncated: bool = False
    """Keep a teacher text cut off by distill.sampling.maxTokens (finish reason length), trained without an end-of-turn token so the student never learns to stop mid-sentence. Default: rejected as `truncated` and regenerated under maxAttempts (a sample the student learns from ends where the teacher ended it)."""
    refusal_text: Optional[str] = Field(None, min_length=1)
    """The fixed refusal: every nocot answer to a harmful prompt, and template answers with templateRefusal: fixed. Default: the answer every response of the release's sft_train_nocot.json shares (by import, spec.prompts), else the project's copy of it: "I'm sorry, I can't assist with that request."."""

    def resolved(self, style: str) -> "RectifySpec":
        """The knobs in force for `style`."""
        return self.model_copy(
            update={
                "safety_awareness": self.safety_awareness if self.safety_awareness is not None else style != "default",
                "consistency_filter": self.consistency_filter
                if self.consistency_filter is not None
                else style == "improved",
            }
        )


class InstructionSpec(_Model):
    text: Optional[str] = None
    """The instruction itself."""
    path: Optional[str] = None
    """A file (path, file:// or s3://) holding the instruction, e.g. one of the release's prompts."""
    placement: str = Field("prefix", pattern="^(prefix|system)$")
    """prefix: put it in front of the user's query (the release's realsafe/improved); system: a system prompt (short/template)."""

    @model_validator(mode="after")
    def _one(self):
        if (self.text is None) == (self.path is None):
            raise ValueError("give exactly one of text or path")
        return self


class DistillSpec(_Model):
    prompts: str = "builtin:demo-safety"
    """Safety prompt set (JSONL or JSON with a prompt or query field): file://, s3://, a path, or builtin:demo-safety."""
    prompt_field: Optional[str] = None
    """Field holding the prompt; default: prompt, then query."""
    math_prompts: Optional[str] = None
    """Optional math prompt set distilled by the same teacher (problem or prompt field)."""
    limit: Optional[int] = Field(None, ge=1, le=COUNT_MAX)
    """Use only the first N prompts."""
    style: Style = Style.improved
    """Reasoning style: default, realsafe, improved, short, template or nocot."""
    instruction: Optional[InstructionSpec] = None
    """Replace the style's instruction with your own text (or file) and placement, e.g. the release's exact prompts."""
    rectify: RectifySpec = Field(default_factory=RectifySpec)
    """Failure-pattern rectification."""
    template_labeller: Labeller = Labeller.oneshot
    """Template style: oneshot (the teacher fills the one-shot template itself, as the release), or code writes the checklist from labels by: teacher (the teacher classifies), guard (the guard judge), labels (the prompt file's categories field)."""
    template_refusal: str = Field("fixed", pattern="^(fixed|teacher)$")
    """Template style built by code: the answer for an unsafe verdict: fixed (rectify.refusalText) or teacher (asked to refuse)."""
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    """Teacher sampling."""
    shards: int = Field(1, ge=1, le=1024)
    """Indexed-Job completions; each shard distills a disjoint slice and resumes on restart."""


class MixSpec(_Model):
    safety_source: Optional[str] = None
    """Safety samples: default the distill stage's output; or a JSONL/JSON in the same schema (prompt and response fields, or messages), e.g. the release's sft_train_<style>.json."""
    safety_count: int = Field(1000, ge=0, le=COUNT_MAX)
    """Safety samples drawn: random.seed(seed); random.sample(safety, safetyCount), as the release's dataset/proc.py (the study: 1000 or 400)."""
    allow_shortfall: bool = False
    """Train with fewer safety samples than safetyCount when distill accepted fewer; by default mix fails and says how many it has."""
    math_source: Optional[str] = "s3://lrm-safety-data/sft/sft_train_math.json"
    """Math CoT samples: a JSONL/JSON with prompt/response (or messages); default: the release's 4,000 R1 math samples (its dataset/data/sft_train_math.json) where docs/install.md stages them; distill (the distill stage's math output, from distill.mathPrompts); or builtin:synthetic-math (arithmetic, for the CPU demo only)."""
    math_count: int = Field(4000, ge=0, le=COUNT_MAX)
    """Math samples: all of them when the source has at most this many (the release keeps all 4,000); else a sample drawn with an RNG of its own, so the safety subset never depends on the math pool."""
    seed: int = Field(42, ge=0, le=SEED_MAX)
    """Sampling seed; the same seed gives the same mixture."""
    dedupe: bool = False
    """Drop samples whose normalised prompt repeats (the release does not)."""
    system_prompt: bool = False
    """Prepend the style's system prompt to each training conversation."""
    heldout_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    """Fraction kept aside as a validation split."""
    overlength: OverlongPolicy = OverlongPolicy.truncate
    """Samples longer than train.maxLength tokens (as the student is trained on them): truncate (train keeps the first maxLength tokens, as TRL does) or drop."""

    @model_validator(mode="after")
    def _math(self):
        if self.math_count > 0 and not self.math_source:
            raise ValueError(
                "mathCount > 0 needs mathSource: the study mixes 4,000 math CoT samples (the release's "
                "sft_train_math.json); name that file, distill (with distill.mathPrompts), or set mathCount: 0"
            )
        if self.overlength == OverlongPolicy.regenerate.value:
            raise ValueError("overlength must be drop or truncate")
        return self
