#!/usr/bin/env bash
# The worker image's lock: pyproject's `worker` and `gpu` extras plus images/worker/requirements.in, resolved for
# the image's platform (Ubuntu 24.04: CPython 3.12, glibc 2.39, x86_64), whatever this machine is.
# uv, not pip-compile: uv resolves for a target Python and platform other than the host's and reads each wheel's
# metadata alone (PyPI's PEP 658 files), so no torch/CUDA wheel is downloaded and a resolve takes seconds.
#   scripts/worker_lock.sh [UV]           write images/worker/requirements.lock
#   scripts/worker_lock.sh --check [UV]   resolve the committed lock on its own: exit 1 on a conflict, or when the
#                                         resolver adds, drops or changes any pin (the lock is not closed)
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
uv=${1:-.venv/bin/uv}
lock=${LOCK:-images/worker/requirements.lock}   # LOCK: another file to check (tests)
target=(--python-version 3.12 --python-platform x86_64-manylinux_2_39)
export UV_PYTHON_DOWNLOADS=never   # resolving needs no interpreter of that version here
pins() { grep -E '^[A-Za-z0-9]' "$1" | sed 's/ *;.*//' | tr 'A-Z_' 'a-z-' | sort; }
if [ "$check" = 0 ]; then
  "$uv" pip compile -q pyproject.toml images/worker/requirements.in --extra worker --extra gpu "${target[@]}" \
    --custom-compile-command "scripts/worker_lock.sh" -o "$lock"
  echo "wrote $lock: $(pins "$lock" | wc -l) pins; $(grep -E '^(torch|vllm|transformers|trl|deepspeed)==' "$lock" | tr '\n' ' ')"
  exit 0
fi
out=$(mktemp); trap 'rm -f "$out"' EXIT
"$uv" pip compile -q "$lock" "${target[@]}" --no-header --no-annotate -o "$out"
if ! diff <(pins "$lock") <(pins "$out"); then
  echo "$lock is not closed under its own requirements (< lock, > resolver): run scripts/worker_lock.sh" >&2
  exit 1
fi
echo "$lock resolves for CPython 3.12 manylinux_2_39 x86_64: $(pins "$lock" | wc -l) pins agree"
