#!/usr/bin/env bash
# mmdebstrap extract hook for the operator image (hack/build-image.sh): the root is
# unpacked, not configured, so this makes what the maintainer scripts would have made.
# $1: the root directory.
set -euo pipefail
root=$1

# The CA bundle update-ca-certificates would write: every Mozilla certificate, in order.
mkdir -p "$root/etc/ssl/certs"
find "$root/usr/share/ca-certificates/mozilla" -name '*.crt' -print0 | LC_ALL=C sort -z \
  | xargs -0 cat > "$root/etc/ssl/certs/ca-certificates.crt"

# root, and the fixed non-root user the chart runs as.
cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/usr/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
mkdir -p "$root/root" "$root/home/nonroot" "$root/tmp"
chmod 0700 "$root/root"
chown 65532:65532 "$root/home/nonroot"
chmod 1777 "$root/tmp"

# The package database scanners read (name, version, source of each Debian package),
# from the packages the root was unpacked from.
status="$root/var/lib/dpkg/status"
: > "$status"
while IFS= read -r -d '' deb; do
  dpkg-deb --field "$deb" Package Version Architecture Source Maintainer Installed-Size \
    Depends Pre-Depends Description | sed '/^Description:/q' >> "$status"
  printf 'Status: install ok installed\n\n' >> "$status"
done < <(find "$root/var/cache/apt/archives" -name '*.deb' -print0 | LC_ALL=C sort -z)
rm -f "$root/var/lib/dpkg/status-old"
rm -rf "$root/var/log"/* "$root/var/cache/debconf"/*
