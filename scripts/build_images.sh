#!/usr/bin/env bash
# Build the operator and worker images (`make images`): with Docker where a daemon answers, else with buildah
# (daemonless, `--isolation chroot`, as root on a plain VM). Tags: $REGISTRY/{operator,worker}:$VERSION, where
# VERSION is pyproject's version (the chart's appVersion) unless set.
#
#   scripts/build_images.sh [options] [operator] [worker]      (default: both)
#   --check              after building the operator image, run it: --help exits 0, it runs as uid 10001, its
#                        imports work, and it starts with a read-only root and no capabilities
#   --base-from-debian   air-gapped fallback, not the normal path: when the operator's registry base
#                        (python:3.11.10-slim-bookworm) cannot be pulled, make a stand-in from Debian packages
#                        (debootstrap bookworm minbase + python3, python3-venv, ca-certificates)
#   --pip-cert FILE      CA bundle for pip inside the build (a TLS-inspecting proxy); default: $PIP_CERT, else pip's
#                        global.cert, else $REQUESTS_CA_BUNDLE or $SSL_CERT_FILE, else none
#   --runtime NAME       OCI runtime for --check with podman (default: the first of crun, runc that starts it)
#   --ulimit SPEC        rlimits for --check (repeatable, podman/docker syntax); default: none, or the first set the
#                        runtime accepts where the machine's hard limits are below the engine's defaults
# Environment: REGISTRY (ghcr.io/lrm-safety), VERSION, TORCH_CUDA_ARCH_LIST (worker), DEBIAN_MIRROR.
set -euo pipefail
cd "$(dirname "$0")/.."

REGISTRY=${REGISTRY:-ghcr.io/lrm-safety}
VERSION=${VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
OPERATOR_BASE=python:3.11.10-slim-bookworm
LOCAL_BASE=localhost/lrm-safety/python-base:bookworm
check=0 from_debian=0 runtime="" pip_cert=${PIP_CERT:-} images=() ulimits=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    --base-from-debian) from_debian=1 ;;
    --pip-cert) pip_cert=$2; shift ;;
    --runtime) runtime=$2; shift ;;
    --ulimit) ulimits+=(--ulimit "$2"); shift ;;
    operator|worker) images+=("$1") ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build_images.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ ${#images[@]} -gt 0 ] || images=(operator worker)

if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
  engine=docker; build=(docker build); run=(docker run)
elif command -v buildah >/dev/null 2>&1; then
  engine=buildah; build=(buildah bud --isolation chroot --layers); run=(podman run)
else
  echo "build_images.sh: neither a Docker daemon nor buildah here. Install one: apt-get install buildah podman" >&2
  exit 2
fi
if [ -z "$pip_cert" ]; then  # the CA bundle this machine's pip trusts, if it names one (a TLS-inspecting proxy)
  pip_cert=$(python3 -m pip config get global.cert 2>/dev/null || true)
  [ -n "$pip_cert" ] || pip_cert=${REQUESTS_CA_BUNDLE:-${SSL_CERT_FILE:-}}
fi
secret=()
if [ -n "$pip_cert" ]; then
  [ -s "$pip_cert" ] || { echo "build_images.sh: --pip-cert $pip_cert: no such file" >&2; exit 2; }
  secret=(--secret "id=pip_cert,src=$pip_cert")
  [ "$engine" = docker ] && export DOCKER_BUILDKIT=1
fi

have_image() {
  if [ "$engine" = docker ]; then docker image inspect "$1" >/dev/null 2>&1; else buildah inspect --type image "$1" >/dev/null 2>&1; fi
}
pull() {
  if [ "$engine" = docker ]; then docker pull -q "$1" >/dev/null 2>&1; else buildah pull -q "$1" >/dev/null 2>&1; fi
}
size() {
  if [ "$engine" = docker ]; then docker image inspect -f '{{.Size}}' "$1"; else podman image inspect -f '{{.Size}}' "$1"; fi
}

# A stand-in for the operator's base from Debian packages, imported under a local name.
debian_base() {
  if have_image "$LOCAL_BASE"; then return; fi
  command -v debootstrap >/dev/null || { echo "build_images.sh: --base-from-debian needs debootstrap (apt-get install debootstrap)" >&2; exit 2; }
  local root; root=$(mktemp -d)
  echo "making $LOCAL_BASE from Debian bookworm packages ($DEBIAN_MIRROR)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$DEBIAN_MIRROR" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  if [ "$engine" = docker ]; then tar -C "$root" -c . | docker import - "$LOCAL_BASE" >/dev/null
  else tar -C "$root" -c . | podman import - "$LOCAL_BASE" >/dev/null; fi
  rm -rf "$root"
}

build_one() {
  local name=$1 tag=$REGISTRY/$1:$VERSION args=() t0
  if [ "$name" = operator ]; then
    local base=$OPERATOR_BASE
    if ! have_image "$base" && ! pull "$base"; then
      if [ "$from_debian" = 1 ]; then debian_base; base=$LOCAL_BASE
      else echo "build_images.sh: cannot pull $base; on an air-gapped machine pass --base-from-debian" >&2; exit 1; fi
    fi
    args=(--build-arg "PYTHON_IMAGE=$base")
  else
    args=(--build-arg "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}")
  fi
  t0=$(date +%s)
  "${build[@]}" "${secret[@]}" "${args[@]}" -f "images/$name/Dockerfile" -t "$tag" .
  local bytes; bytes=$(size "$tag")
  echo "built $tag with $engine in $(( $(date +%s) - t0 )) s, $(( bytes / 1000000 )) MB"
}

# Run a container, finding the runtime and rlimits this machine lets it start with: a VM's hard limits can sit
# below the engine's defaults (setrlimit fails), and crun rejects hybrid cgroup hierarchies that runc accepts.
runner=()
pick_runner() {
  local img=$1 rts=("") sets
  if [ "$engine" = buildah ]; then
    if [ -n "$runtime" ]; then rts=("$runtime"); else rts=(); for r in crun runc; do command -v $r >/dev/null && rts+=("$r"); done; fi
  fi
  local hn hu; hn=$(ulimit -Hn); hu=$(ulimit -Hu)
  [ "$hn" = unlimited ] && hn=1048576; [ "$hu" = unlimited ] && hu=1048576
  if [ ${#ulimits[@]} -gt 0 ]; then sets=("${ulimits[*]}")
  else sets=("" "--ulimit nofile=$hn:$hn --ulimit nproc=$hu:$hu" "--ulimit nofile=$hn:$hn --ulimit nproc=$(( hu < 32768 ? hu : 32768 )):$(( hu < 32768 ? hu : 32768 ))"); fi
  for rt in "${rts[@]}"; do
    for s in "${sets[@]}"; do
      local cand=("${run[@]}"); [ -n "$rt" ] && cand=(podman --runtime "$rt" run)
      # shellcheck disable=SC2206
      cand+=(--rm $s)
      if "${cand[@]}" --entrypoint true "$img" >/dev/null 2>&1; then runner=("${cand[@]}"); echo "runs with: ${runner[*]}"; return; fi
    done
  done
  echo "build_images.sh: no runtime/rlimit combination starts $img; last error:" >&2
  "${run[@]}" --rm --entrypoint true "$img" >&2 || true
  exit 1
}

check_operator() {
  local tag=$REGISTRY/operator:$VERSION
  pick_runner "$tag"
  local hard=(--read-only --cap-drop=ALL --security-opt no-new-privileges --network none)
  "${runner[@]}" "${hard[@]}" "$tag" --help >/dev/null
  echo "ok: --help exits 0 with a read-only root, no capabilities, no network"
  local uid; uid=$("${runner[@]}" "${hard[@]}" --entrypoint id "$tag" -u)
  [ "$uid" = 10001 ] || { echo "FAIL: runs as uid $uid, not 10001" >&2; exit 1; }
  echo "ok: runs as uid $uid"
  "${runner[@]}" "${hard[@]}" --entrypoint python "$tag" -c "
import kopf, kubernetes, lrm_safety, safety_operator.handlers, os
caps = [l.split()[1] for l in open('/proc/self/status') if l.startswith(('CapEff', 'CapPrm'))]
assert set(caps) == {'0000000000000000'}, caps
try:
    open('/probe', 'w')
except OSError:
    pass
else:
    raise SystemExit('the root filesystem is writable')
print('ok: kopf, kubernetes, lrm_safety and the handlers import; effective capabilities', caps[-1], '; root read-only')"
}

for name in "${images[@]}"; do build_one "$name"; done
if [ "$check" = 1 ]; then
  for name in "${images[@]}"; do [ "$name" = operator ] && check_operator; done
fi
