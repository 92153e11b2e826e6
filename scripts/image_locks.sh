#!/usr/bin/env bash
# The images' locks, so an image holds the same packages whatever the day it is built:
#   images/worker/requirements.lock    pyproject's `worker` and `gpu` extras + images/worker/requirements.in, for
#                                      the worker's platform (Ubuntu 24.04: CPython 3.12, glibc 2.39, x86_64)
#   images/operator/requirements.lock  pyproject's `operator` extra, for the operator's base
#                                      (python:3.11-slim-bookworm: CPython 3.11, glibc 2.36, x86_64)
# uv, not pip-compile: uv resolves for a target Python and platform other than the host's and reads each wheel's
# metadata alone (PyPI's PEP 658 files), so no torch/CUDA wheel is downloaded and a resolve takes seconds.
#   scripts/image_locks.sh [UV]           write both locks
#   scripts/image_locks.sh --check [UV]   resolve each committed lock on its own: exit 1 on a conflict, or when the
#                                         resolver adds, drops or changes any pin (a lock that is not closed)
# WORKER_LOCK / OPERATOR_LOCK: other files to check (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
uv=${1:-.venv/bin/uv}
export UV_PYTHON_DOWNLOADS=never   # resolving needs no interpreter of that version here
pins() { grep -E '^[A-Za-z0-9]' "$1" | sed 's/ *;.*//' | tr 'A-Z_' 'a-z-' | sort; }

# name  lock  python  platform  inputs...
lock_one() {
  local name=$1 lock=$2 py=$3 plat=$4; shift 4
  local target=(--python-version "$py" --python-platform "$plat")
  if [ "$check" = 0 ]; then
    "$uv" pip compile -q "$@" "${target[@]}" --custom-compile-command "scripts/image_locks.sh" -o "$lock"
    echo "wrote $lock: $(pins "$lock" | wc -l) pins"
    return
  fi
  local out; out=$(mktemp)
  "$uv" pip compile -q "$lock" "${target[@]}" --no-header --no-annotate -o "$out"
  if ! diff <(pins "$lock") <(pins "$out"); then
    rm -f "$out"
    echo "$lock is not closed under its own requirements (< lock, > resolver): run scripts/image_locks.sh" >&2
    exit 1
  fi
  rm -f "$out"
  echo "$lock resolves for CPython $py $plat: $(pins "$lock" | wc -l) pins agree"
}

lock_one worker "${WORKER_LOCK:-images/worker/requirements.lock}" 3.12 x86_64-manylinux_2_39 \
  pyproject.toml images/worker/requirements.in --extra worker --extra gpu
lock_one operator "${OPERATOR_LOCK:-images/operator/requirements.lock}" 3.11 x86_64-manylinux_2_36 \
  pyproject.toml --extra operator
if [ "$check" = 0 ]; then
  grep -E '^(torch|vllm|transformers|trl|deepspeed)==' images/worker/requirements.lock | tr '\n' ' '; echo
fi
