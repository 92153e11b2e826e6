#!/usr/bin/env bash
# Debian packages CI's test lanes use (root, CI=true only; a user's `make test` skips those tests with a reason):
# buildah, podman, runc and debootstrap build and run the operator image (tests/test_images.py).
set -euo pipefail
need=()
for cmd in buildah podman runc debootstrap; do command -v "$cmd" >/dev/null || need+=("$cmd"); done
[ ${#need[@]} -eq 0 ] && exit 0
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
echo "installed: ${need[*]}"
