#!/usr/bin/env bash
# Build, render, deploy and shift traffic for the Knative deployment (the targets of deploy.mk).
#
#   scripts/knative.sh build|render|deploy|canary|promote|rollback|status|undeploy
#
# Every pack/kubectl/kn command is printed ("+ ...") before it runs; with DRY_RUN=1 only the
# local and read-only ones run (kubectl kustomize into .deploy/, kubectl get): nothing is built,
# pushed or changed in a cluster. Settings come from the environment
# (deploy.mk passes them): IMAGE, IMAGE_REF, VERSION, OVERLAY, NAMESPACE, SERVICE, PERCENT,
# REVISION, PURGE, BUILDER, RUN_IMAGE, PYTHON_VERSION, WAIT_TIMEOUT, KUBECTL, KN, PACK.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

DRY_RUN="${DRY_RUN:-0}"
SERVICE="${SERVICE:-detection-api}"
NAMESPACE="${NAMESPACE:-detection-api}"
OVERLAY="${OVERLAY:-knative/overlays/prod}"
IMAGE="${IMAGE:-registry.example.com/detection-api/detection-api}"
IMAGE_REF="${IMAGE_REF:-}"
BUILDER="${BUILDER:-docker.io/paketobuildpacks/builder-jammy-base:latest}"
RUN_IMAGE="${RUN_IMAGE:-docker.io/paketobuildpacks/run-jammy-base:latest}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
PERCENT="${PERCENT:-10}"
REVISION="${REVISION:-}"
PURGE="${PURGE:-0}"
WAIT_TIMEOUT="${WAIT_TIMEOUT:-300s}"
KN="${KN:-kn}"
PACK="${PACK:-pack}"
# Cluster commands use the operator's kubectl; `render` only needs one with kustomize (fetched if missing).
KUBECTL="${KUBECTL:-kubectl}"

die() { echo "knative.sh: $*" >&2; exit 2; }

# Shell-quote an argument only when it needs it, so printed commands stay readable and pasteable.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

show() {
  local out="+" arg
  for arg in "$@"; do out+=" $(quote "$arg")"; done
  echo "$out"
}

# Print a command, then run it unless DRY_RUN=1.
run() {
  show "$@"
  [[ "$DRY_RUN" == 1 ]] || "$@"
}

version() {
  if [[ -n "${VERSION:-}" ]]; then
    echo "$VERSION"
  else
    git -C "$repo_root" describe --tags --always --dirty 2>/dev/null || die "set VERSION (no git here)"
  fi
}

# The version as part of a revision name: lower case, [a-z0-9-].
version_slug() {
  version | tr '[:upper:]' '[:lower:]' | sed -E 's/[^a-z0-9-]+/-/g; s/-+/-/g; s/^-//; s/-$//'
}

# Label values allow [A-Za-z0-9._-], 63 characters, alphanumeric at both ends.
version_label() {
  local value
  value="$(version | sed -E 's/[^A-Za-z0-9._-]+/-/g')"
  value="${value:0:63}"
  value="$(echo "$value" | sed -E 's/^[^A-Za-z0-9]+//; s/[^A-Za-z0-9]+$//')"
  echo "$value"
}

check_image_ref() {
  [[ "$1" =~ ^[^@[:space:]]+@sha256:[0-9a-f]{64}$ ]] || die "IMAGE_REF must be <image>@sha256:<64 hex>, got '$1'"
}

# pack build --publish pushes the image; its digest comes from the lifecycle's
# "*** Images (sha256:<digest>):" line. Sets REF=<IMAGE>@sha256:<digest> (no subshell, so the
# printed commands keep their order).
build_image() {
  local tag log digest
  tag="$IMAGE:$(version_label)"
  show "$PACK" build "$tag" --builder "$BUILDER" --run-image "$RUN_IMAGE" \
    --env "BP_CPYTHON_VERSION=$PYTHON_VERSION" --publish
  if [[ "$DRY_RUN" == 1 ]]; then
    REF="$IMAGE@sha256:$(printf '0%.0s' {1..64})"
    echo "knative.sh: DRY_RUN: $REF stands for the digest pack build prints" >&2
    return
  fi
  log="$(mktemp)"
  "$PACK" build "$tag" --builder "$BUILDER" --run-image "$RUN_IMAGE" \
    --env "BP_CPYTHON_VERSION=$PYTHON_VERSION" --publish 2>&1 | tee "$log" >&2
  digest="$(grep -oE 'sha256:[0-9a-f]{64}' "$log" | tail -n 1 || true)"
  rm -f "$log"
  [[ -n "$digest" ]] || die "pack build printed no image digest"
  REF="$IMAGE@$digest"
}

# Sets REF: IMAGE_REF when given (a prebuilt image), else what build_image pushed.
image_ref() {
  if [[ -n "$IMAGE_REF" ]]; then
    check_image_ref "$IMAGE_REF"
    REF="$IMAGE_REF"
  else
    build_image
  fi
}

# The release: OVERLAY with the image pinned by digest, the revision named after its template,
# and the traffic pinned by tag. It is a generated kustomization in $DEPLOY_DIR/<overlay>
# (default .deploy, which ignores itself in git); `make canary` writes $DEPLOY_DIR/<overlay>-canary.
# Both paths are relative to the repository, as kustomize wants for other kustomizations.
# Rendering is local, so DRY_RUN=1 writes and renders the release too (the plan it prints is
# exact); it builds, pushes and changes nothing in a cluster.
DEPLOY_DIR="${DEPLOY_DIR:-.deploy}"
[[ "$DEPLOY_DIR" != /* && "$OVERLAY" != /* ]] || die "DEPLOY_DIR and OVERLAY must be relative to $repo_root"
CONFIG_MAP="${CONFIG_MAP:-detection-api-config}"
release_dir() { echo "$DEPLOY_DIR/$(basename "$OVERLAY")${1:+-$1}"; }

flagger_owns_traffic() {
  # The overlay includes the flagger-canary component (which labels the Service
  # detection-api.io/traffic: flagger and drops its traffic block).
  grep -qs "components/flagger-canary" "$OVERLAY/kustomization.yaml"
}

# kubectl for local rendering: $KUBECTL when it runs here, else scripts/ensure_kubectl.sh.
render_kubectl() {
  [[ -n "${RENDER_KUBECTL:-}" ]] && return
  if command -v "$KUBECTL" >/dev/null 2>&1; then
    RENDER_KUBECTL="$KUBECTL"
  else
    RENDER_KUBECTL="$(env -u KUBECTL scripts/ensure_kubectl.sh)"
  fi
}

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi | cut -c1-64
}

# One object of a rendered bundle (kustomize separates objects with `---` and writes
# `apiVersion`, `kind` and the metadata `name` at these indentations).
bundle_object() {
  awk -v api="$1" -v kind="$2" -v name="$3" '
    function flush() { if (a && k && n) printf "%s", doc; doc = ""; a = k = n = 0 }
    /^---$/ { flush(); next }
    { doc = doc $0 "\n" }
    $0 == "apiVersion: " api { a = 1 }
    $0 == "kind: " kind { k = 1 }
    $0 == "  name: " name { n = 1 }
    END { flush() }'
}

# The `spec.template` block of a Knative Service object (its lines indented deeper than 2).
template_block() {
  awk '/^  template:$/ { t = 1; print; next } t && /^ ? ?[^ ]/ { t = 0 } t { print }'
}

# Traffic blocks (YAML flow lists) of the release.
deploy_traffic() { echo "[{revisionName: $1, tag: current, percent: 100}, {latestRevision: true, tag: candidate, percent: 0}]"; }
canary_traffic() { echo "[{revisionName: $1, tag: current, percent: $((100 - PERCENT))}, {revisionName: $2, tag: candidate, percent: $PERCENT}]"; }
# deploy: the new revision is `current`; canary: $CANARY_CURRENT stays `current`, the new one is `candidate`.
release_traffic() {
  case "$1" in
    deploy) deploy_traffic "$2" ;;
    canary) canary_traffic "$CANARY_CURRENT" "$2" ;;
  esac
}

release_kustomization() {
  local ref="$1" revision="$2" config_sha="$3" traffic="$4" up
  up="$(release_dir x | sed -E 's#[^/]+#..#g')"
  cat <<EOF
# Generated by scripts/knative.sh for release $(version) of $OVERLAY: do not edit.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $up/$OVERLAY
labels:
  - pairs:
      app.kubernetes.io/version: "$(version_label)"
images:
  - name: detection-api
    newName: ${ref%@*}
    digest: ${ref#*@}
patches:
  - target: {group: serving.knative.dev, kind: Service, name: $SERVICE}
    patch: |-
      - op: add
        path: /spec/template/metadata/name
        value: $revision
      - op: add
        path: /spec/template/metadata/labels/app.kubernetes.io~1version
        value: "$(version_label)"
      - op: add
        path: /spec/template/metadata/annotations/detection-api.io~1config-sha256
        value: "$config_sha"
EOF
  # With Flagger the traffic block belongs to Flagger: pinning it here would skip the canary.
  flagger_owns_traffic && return
  cat <<EOF
      - op: add
        path: /spec/traffic
        value: $traffic
EOF
}

# Sets REVISION_NAME and CONFIG_SHA for the release of image $1 (in release directory $2):
# renders it once with placeholders, hashes the Service's template (and the ConfigMap its pods
# read, which becomes a template annotation). The name is detection-api-<version>-<10 hex>: it
# changes whenever the template does (image, env, resources, config, version), and only then.
name_revision() {
  local ref="$1" dir="$2" rendered template slug hash max
  render_kubectl
  mkdir -p "$dir"
  printf '*\n' >"$DEPLOY_DIR/.gitignore"
  release_kustomization "$ref" "$SERVICE-pending" pending "$(deploy_traffic "$SERVICE-pending")" \
    >"$dir/kustomization.yaml"
  rendered="$("$RENDER_KUBECTL" kustomize "$dir")" || die "kubectl kustomize $dir failed"
  template="$(bundle_object serving.knative.dev/v1 Service "$SERVICE" <<<"$rendered" | template_block)"
  [[ -n "$template" ]] || die "the rendering of $OVERLAY has no Knative Service $SERVICE"
  CONFIG_SHA="$(bundle_object v1 ConfigMap "$CONFIG_MAP" <<<"$rendered" | sha256)"
  hash="$(printf '%s\nconfig-sha256 %s\n' "$template" "$CONFIG_SHA" | sha256)"
  hash="${hash:0:10}"
  slug="$(version_slug)"
  max=$((63 - ${#SERVICE} - 1 - ${#hash} - 1))
  slug="${slug:0:$max}"
  slug="${slug%-}"
  REVISION_NAME="$SERVICE-${slug:+$slug-}$hash"
}

# Writes the release of image $1 with the traffic of kind $2 (deploy or canary) into release
# directory $3 and renders it to $3/bundle.yaml. Sets REVISION_NAME.
write_release() {
  local ref="$1" traffic="$2" dir="$3"
  name_revision "$ref" "$dir"
  echo "+ write $dir/kustomization.yaml:"
  release_kustomization "$ref" "$REVISION_NAME" "$CONFIG_SHA" "$(release_traffic "$traffic" "$REVISION_NAME")" |
    tee "$dir/kustomization.yaml" | sed 's/^/    /'
  show kubectl kustomize "$dir" -o "$dir/bundle.yaml"
  "$RENDER_KUBECTL" kustomize "$dir" -o "$dir/bundle.yaml" || die "kubectl kustomize $dir failed"
  grep -qF "image: $ref" "$dir/bundle.yaml" ||
    die "$dir/bundle.yaml does not use $ref: does $OVERLAY rename the image 'detection-api'?"
}

cmd_build() {
  build_image
  echo "image: $REF"
}

cmd_render() {
  if [[ -n "$IMAGE_REF" ]]; then
    check_image_ref "$IMAGE_REF"
    write_release "$IMAGE_REF" deploy "$(release_dir)" >&2
    cat "$(release_dir)/bundle.yaml"
  else
    render_kubectl
    show kubectl kustomize "$OVERLAY" >&2
    "$RENDER_KUBECTL" kustomize "$OVERLAY"
  fi
}

cmd_deploy() {
  local bundle
  image_ref
  write_release "$REF" deploy "$(release_dir)"
  # Apply exactly what was rendered and checked (kept as a record). Applying the same release
  # again changes nothing: same template, same revision name.
  bundle="$(release_dir)/bundle.yaml"
  run "$KUBECTL" apply -f "$bundle"
  # Ready means a pod of the new revision passed /ready, i.e. it reached Redis.
  run "$KUBECTL" wait --for=condition=Ready "services.serving.knative.dev/$SERVICE" \
    -n "$NAMESPACE" --timeout="$WAIT_TIMEOUT"
  run "$KUBECTL" rollout status deployment/tak-forwarder -n "$NAMESPACE" --timeout="$WAIT_TIMEOUT"
  run "$KUBECTL" get "services.serving.knative.dev/$SERVICE" -n "$NAMESPACE"
}

no_flagger() {
  ! flagger_owns_traffic || die "$OVERLAY gives the traffic to Flagger: use 'make deploy' (README.md)"
}

# Sets TAGGED to the revision a tag points at, from the Service's status (which resolves
# latestRevision targets too). Reads run with DRY_RUN=1 as well; without a cluster the plan
# shows a placeholder.
tagged_revision() {
  local tag="$1"
  local query=(get "services.serving.knative.dev/$SERVICE" -n "$NAMESPACE"
    -o "jsonpath={.status.traffic[?(@.tag==\"$tag\")].revisionName}")
  show "$KUBECTL" "${query[@]}"
  if TAGGED="$("$KUBECTL" "${query[@]}" 2>/dev/null)" && [[ -n "$TAGGED" ]]; then
    TAGGED="${TAGGED%% *}"
    return
  fi
  [[ "$DRY_RUN" == 1 ]] || die "no revision is tagged '$tag'"
  TAGGED="$SERVICE-tagged-$tag"
  echo "knative.sh: no cluster answered: '$TAGGED' stands for the revision tagged $tag" >&2
}

# The Service's traffic, replaced as a whole (a JSON merge patch replaces lists): the template is
# untouched, so no revision is created and Knative's name rule is not involved.
patch_traffic() {
  run "$KUBECTL" patch "services.serving.knative.dev/$SERVICE" -n "$NAMESPACE" --type merge \
    -p "{\"spec\":{\"traffic\":$1}}"
}

cmd_canary() {
  local dir
  no_flagger
  if ! [[ "$PERCENT" =~ ^[0-9]+$ ]] || ((PERCENT < 1 || PERCENT > 99)); then
    die "PERCENT must be 1..99 (100% is 'make promote'), got '$PERCENT'"
  fi
  image_ref
  tagged_revision current
  CANARY_CURRENT="$TAGGED"
  # The function's Service only, with the new template (a new revision when the template changed,
  # the same one on a retry) tagged `candidate` at PERCENT; `current` keeps the rest. The
  # forwarder and the ConfigMap stay as deployed.
  dir="$(release_dir canary)"
  write_release "$REF" canary "$dir"
  bundle_object serving.knative.dev/v1 Service "$SERVICE" <"$dir/bundle.yaml" >"$dir/service.yaml"
  run "$KUBECTL" apply -f "$dir/service.yaml"
  run "$KUBECTL" wait --for=condition=Ready "services.serving.knative.dev/$SERVICE" \
    -n "$NAMESPACE" --timeout="$WAIT_TIMEOUT"
  run "$KUBECTL" get "services.serving.knative.dev/$SERVICE" -n "$NAMESPACE"
}

cmd_promote() {
  local revision="$REVISION"
  no_flagger
  if [[ -z "$revision" ]]; then
    tagged_revision candidate
    revision="$TAGGED"
  fi
  # All traffic to the candidate, which becomes `current`; `candidate` follows the latest again.
  patch_traffic "[{\"revisionName\":\"$revision\",\"tag\":\"current\",\"percent\":100},{\"latestRevision\":true,\"tag\":\"candidate\",\"percent\":0}]"
  run "$KUBECTL" get "services.serving.knative.dev/$SERVICE" -n "$NAMESPACE"
}

cmd_rollback() {
  local current candidate
  no_flagger
  if [[ -n "$REVISION" ]]; then
    # After a promote: `current` back to an older revision, with everything.
    patch_traffic "[{\"revisionName\":\"$REVISION\",\"tag\":\"current\",\"percent\":100},{\"latestRevision\":true,\"tag\":\"candidate\",\"percent\":0}]"
  else
    # During a canary: everything back to `current`; the candidate keeps its tag (and URL) at 0%.
    tagged_revision current
    current="$TAGGED"
    tagged_revision candidate
    candidate="$TAGGED"
    patch_traffic "[{\"revisionName\":\"$current\",\"tag\":\"current\",\"percent\":100},{\"revisionName\":\"$candidate\",\"tag\":\"candidate\",\"percent\":0}]"
  fi
  run "$KUBECTL" get "services.serving.knative.dev/$SERVICE" -n "$NAMESPACE"
}

cmd_status() {
  run "$KN" service describe "$SERVICE" -n "$NAMESPACE"
  run "$KN" revision list -s "$SERVICE" -n "$NAMESPACE"
  run "$KUBECTL" get brokers.eventing.knative.dev,triggers.eventing.knative.dev -n "$NAMESPACE"
  run "$KUBECTL" get deployment,statefulset,poddisruptionbudget,pods -n "$NAMESPACE"
}

cmd_undeploy() {
  if [[ "$PURGE" == 1 ]]; then
    # Everything, including the namespace: its Secrets and Redis's volume (queued detections) go too.
    run "$KUBECTL" delete -k "$OVERLAY" --ignore-not-found
  else
    # Keeps what is labelled detection-api.io/retain (the namespace, the StorageClass), and so
    # the Secrets and the Redis volume claim, which no manifest creates.
    run "$KUBECTL" delete -k "$OVERLAY" --ignore-not-found -l '!detection-api.io/retain'
  fi
}

verb="${1:-}"
case "$verb" in
  build | render | deploy | canary | promote | rollback | status | undeploy) "cmd_$verb" ;;
  *) die "usage: $0 build|render|deploy|canary|promote|rollback|status|undeploy" ;;
esac
