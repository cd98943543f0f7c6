#!/usr/bin/env bash
# Validates the Kubernetes manifests in deploy/kubernetes strictly against Kubernetes' schemas
# (kubernetes-validate --strict: an unknown field, a wrong type or a missing required field
# fails), each kustomization rendered as kubectl would apply it, and the ConfigMap variant's
# example flag files with `vexil validate`. Installs the validator into a venv under target/.
# First it checks that the validator rejects a broken manifest, so that it cannot pass vacuously.
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_version=1.33.0  # the oldest Kubernetes the manifests are checked against, besides the newest
venv="${CARGO_TARGET_DIR:-target}/deploy/venv"
requirements=deploy/kubernetes/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt" 2> /dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/requirements.txt"
fi
validate() { "$venv/bin/kubernetes-validate" --strict --quiet "$@"; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The validator must fail on a manifest with an unknown field and on one with a wrong type.
cat > "$work/unknown-field.yaml" << 'YAML'
apiVersion: v1
kind: Service
metadata: { name: broken }
spec:
  ports: [{ port: 8014, targetPortt: 8014 }]
YAML
cat > "$work/wrong-type.yaml" << 'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: { name: broken }
spec:
  replicas: three
  selector: { matchLabels: { app: broken } }
  template:
    metadata: { labels: { app: broken } }
    spec: { containers: [{ name: broken, image: broken }] }
YAML
for broken in "$work/unknown-field.yaml" "$work/wrong-type.yaml"; do
    if validate "$broken" > /dev/null 2>&1; then
        echo "validate-manifests: kubernetes-validate accepted the broken $(basename "$broken")" >&2
        exit 1
    fi
done

# Every kustomization, rendered; without kubectl, each plain manifest file alone.
kustomizations=$(find deploy/kubernetes -name kustomization.yaml -printf '%h\n' | sort)
kubectl="${KUBECTL:-kubectl}"  # KUBECTL= a missing path tries the fallback
if command -v "$kubectl" > /dev/null; then
    for dir in $kustomizations; do
        out="$work/$(echo "$dir" | tr / _).yaml"
        "$kubectl" kustomize "$dir" > "$out"
        grep -q '^kind: Deployment$' "$out" || { echo "validate-manifests: $dir renders no Deployment" >&2; exit 1; }
        for version in "$k8s_version" 1.37.0; do
            validate -k "$version" "$out" || { echo "validate-manifests: $dir fails against Kubernetes $version (above)" >&2; exit 1; }
        done
        echo "validate-manifests: $dir: $(grep -c '^kind:' "$out") resources valid (Kubernetes $k8s_version and 1.37.0)"
    done
else
    echo "validate-manifests: kubectl not found: validating deploy/kubernetes/git/*.yaml one by one (the overlays are not rendered)"
    for file in deploy/kubernetes/git/*.yaml; do
        [ "$(basename "$file")" = kustomization.yaml ] && continue
        validate "$file" || { echo "validate-manifests: $file fails (above)" >&2; exit 1; }
    done
fi

# The ConfigMap variant's flag files.
vexil=("${VEXIL_BIN:-}")
if [ -z "${VEXIL_BIN:-}" ]; then vexil=(cargo run --quiet --locked -p vexil --); fi
"${vexil[@]}" validate deploy/kubernetes/configmap-directory/flags
