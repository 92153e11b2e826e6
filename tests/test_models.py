import json
import time

import pytest

from lrm_safety.models.refs import ModelResolutionError, resolve_model
from lrm_safety.store import open_store


def test_builtin_converts_once(smol_dir):
    cfg = json.loads((smol_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "quantization_config" not in cfg
    assert (smol_dir / "model.safetensors").is_file() and (smol_dir / "tokenizer.json").is_file()
    t = time.perf_counter()
    assert resolve_model("builtin:smollm2-135m-instruct") == smol_dir
    assert time.perf_counter() - t < 2, "second resolve must hit the cache"


def test_converted_model_generates(smol_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    model = AutoModelForCausalLM.from_pretrained(smol_dir)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert len(tok.decode(out[0][ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()) > 0


def test_local_dir_and_errors(smol_dir, tmp_path):
    assert resolve_model(str(smol_dir)) == smol_dir
    with pytest.raises(ModelResolutionError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelResolutionError, match="no config.json"):
        resolve_model(str(tmp_path / "empty"))
    with pytest.raises(ModelResolutionError, match="unknown builtin"):
        resolve_model("builtin:gpt-7")


def test_hub_id_offline_error_names_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelResolutionError, match="huggingface-cli download"):
        resolve_model("some-org/not-cached-model")


def test_s3_prefix_downloads_once(smol_dir, s3_endpoint, bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("LRM_SAFETY_CACHE", str(tmp_path / "cache"))
    store = open_store(f"s3://{bucket}/models/smol", endpoint=s3_endpoint)
    store.upload_dir(smol_dir, "")
    local = resolve_model(f"s3://{bucket}/models/smol", endpoint=s3_endpoint)
    assert (local / "model.safetensors").read_bytes() == (smol_dir / "model.safetensors").read_bytes()
    assert resolve_model(f"s3://{bucket}/models/smol", endpoint=s3_endpoint) == local
