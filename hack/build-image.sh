#!/usr/bin/env bash
# Build the operator image with no container engine and no registry (`make image`).
#
#   1. a minimal Debian bookworm root with Python 3.11 and CA certificates, from Debian's
#      packages (mmdebstrap, unpacked only: no shell, no package manager, no docs);
#   2. the packages of requirements.lock, hash-checked, as binary wheels for that Python,
#      and the operator itself without its dependencies; no pip, no caches;
#   3. users root and nonroot (65532), the entrypoint `mistral-operator`, byte code
#      for what it imports as it starts (the root is read-only at run time), and its own
#      reference in MISTRAL_OPERATOR_IMAGE (the cache-fill Jobs' default image);
#   4. one layer with fixed ownership and timestamps (SOURCE_DATE_EPOCH, the commit's
#      time), an OCI layout under dist/oci and a docker-archive beside it.
#
# The reference is the chart's: image.repository from values.yaml, appVersion as tag.
# Needs root (chroot, file ownership). Installs mmdebstrap, umoci and skopeo from
# Debian's packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PYTHON=python3.11
SITE=usr/local/lib/$PYTHON/dist-packages
UID_GID=65532

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "make image needs root (it unpacks Debian packages and sets file owners)"

need=()
for tool in mmdebstrap:mmdebstrap umoci:umoci skopeo:skopeo; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian's packages"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

chart=charts/mistral-operator
version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$chart/Chart.yaml")
repository=$(awk '/^image:/{f=1; next} f && /^[^ #]/{f=0} f && $1 == "repository:" {print $2}' \
  "$chart/values.yaml")
[ -n "$version" ] && [ -n "$repository" ] || die "no appVersion or image.repository in $chart"
pyproject_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
[ "$version" = "$pyproject_version" ] \
  || die "the chart's appVersion ($version) is not the package version ($pyproject_version)"
reference="$repository:$version"

revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- operator pyproject.toml requirements.lock 2>/dev/null)" ]; then
  revision="$revision-dirty"
fi
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)

work=build/image
rootfs=$work/rootfs
rm -rf "$work" dist/oci "dist/mistral-operator-$version.tar"
mkdir -p "$work/wheels" dist
started=$(date +%s)

log "Debian $SUITE root: $PYTHON and CA certificates"
# Unpacked, not configured: no maintainer scripts run, so what they would make is made
# here (the certificate bundle, the users, the package database for scanners).
mmdebstrap --quiet --variant=extract --include="$PYTHON,ca-certificates" \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --extract-hook='hack/image-root.sh "$1"' \
  "$SUITE" "$work/rootfs.tar" \
  "deb $DEBIAN_MIRROR $SUITE main" "deb $DEBIAN_MIRROR $SUITE-updates main" \
  "deb $DEBIAN_SECURITY_MIRROR $SUITE-security main" > "$work/mmdebstrap.log" 2>&1 \
  || { cat "$work/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
mkdir -p "$rootfs"
tar -xf "$work/rootfs.tar" -C "$rootfs"

log "Python packages from requirements.lock (hashes required), then the operator"
platforms=()
for minor in 5 12 17 24 28 31 34 35 36; do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
pip=("$PY" -m pip --disable-pip-version-check --no-input --no-cache-dir)
"${pip[@]}" install --quiet --no-compile --no-warn-conflicts --require-hashes \
  -r requirements.lock --target "$rootfs/$SITE" --only-binary=:all: "${platforms[@]}" \
  --python-version 3.11 --implementation cp --abi cp311
"${pip[@]}" wheel --quiet --no-deps --wheel-dir "$work/wheels" .
"${pip[@]}" install --quiet --no-compile --no-warn-conflicts --no-deps \
  --target "$work/operator" "$work"/wheels/mistral_operator-*.whl
cp -a "$work/operator"/mistral_operator* "$rootfs/$SITE/"
# What pip leaves that the image has no use for: console scripts with this machine's
# interpreter path, the wheel's file URL, and the kubernetes client's asyncio copy
# (the operator uses the synchronous client; Kopf talks to the API with aiohttp).
rm -rf "$rootfs/$SITE/bin" "$rootfs/$SITE/kubernetes/aio"
rm -f "$rootfs"/$SITE/*.dist-info/direct_url.json
find "$rootfs/$SITE" -depth -type d \( -name tests -o -name test \) -path '*/kubernetes/*' \
  -exec rm -rf {} +
install -D -m 0755 operator/image/mistral-operator "$rootfs/usr/local/bin/mistral-operator"
ln -s "$PYTHON" "$rootfs/usr/bin/python3"

# The image has no use either for glibc's iconv charset modules (Python brings its own codecs) and the text of
# the interactive help() and the regression tests' support package.
rm -rf "$rootfs/usr/lib/x86_64-linux-gnu/gconv" "$rootfs/usr/lib/$PYTHON/pydoc_data" \
  "$rootfs/usr/lib/$PYTHON/test"

log "byte code for what the operator imports as it starts"
install -m 0644 hack/image-compile.py "$rootfs/tmp/image-compile.py"
chroot "$rootfs" "/usr/bin/$PYTHON" -B /tmp/image-compile.py >&2
rm "$rootfs/tmp/image-compile.py"
PYTHONDONTWRITEBYTECODE=1 chroot "$rootfs" /usr/local/bin/mistral-operator --help >/dev/null \
  || die "the operator does not start in its root"

find "$rootfs" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
tar --sort=name --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .

log "OCI layout and docker-archive for $reference"
umoci init --layout dist/oci
umoci new --image "dist/oci:$version"
umoci raw add-layer --image "dist/oci:$version" --history.created="$created" \
  --history.created_by="make image" "$work/layer.tar"
umoci config --image "dist/oci:$version" --created="$created" --history.created="$created" \
  --history.created_by="make image" \
  --os=linux --architecture=amd64 --config.user="$UID_GID:$UID_GID" \
  --config.entrypoint=/usr/local/bin/mistral-operator --config.cmd=run \
  --config.workingdir=/ --config.exposedports=8080/tcp --config.exposedports=8081/tcp \
  --config.env="PATH=/usr/local/bin:/usr/bin:/bin" --config.env=PYTHONDONTWRITEBYTECODE=1 \
  --config.env=PYTHONUNBUFFERED=1 --config.env=HOME=/home/nonroot \
  --config.env=SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
  --config.env="MISTRAL_OPERATOR_IMAGE=$reference" \
  --config.label=org.opencontainers.image.title=mistral-operator \
  --config.label="org.opencontainers.image.description=Serves Mistral MoE models with SGLang on Kubernetes GPU nodes" \
  --config.label=org.opencontainers.image.licenses=Apache-2.0 \
  --config.label="org.opencontainers.image.version=$version" \
  --config.label="org.opencontainers.image.revision=$revision" \
  --config.label="org.opencontainers.image.created=$created" \
  --config.label="org.opencontainers.image.base.name=debian:$SUITE"
umoci gc --layout dist/oci
skopeo copy --quiet "oci:dist/oci:$version" \
  "docker-archive:dist/mistral-operator-$version.tar:$reference"

digest=$(skopeo inspect --format '{{.Digest}}' "oci:dist/oci:$version")
size=$(du -sb "$rootfs" | cut -f1)
log "built in $(($(date +%s) - started)) s: $((size / 1000000)) MB uncompressed, $digest"
echo "$reference"
