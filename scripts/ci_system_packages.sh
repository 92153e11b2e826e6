#!/usr/bin/env bash
# Debian packages CI's test lanes use (root, CI=true only; a user's `make test` skips those tests with a reason):
# buildah, podman, runc and debootstrap build and run the operator image (tests/test_images.py); etcd-server is the
# real control plane's store (tests/test_operator_real.py, with ../shared/kube's kube-apiserver and kcm).
set -euo pipefail
need=()
for cmd in buildah podman runc debootstrap; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
command -v etcd >/dev/null || need+=(etcd-server)
[ ${#need[@]} -eq 0 ] && exit 0
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
