#!/usr/bin/env bash
# Build (or reuse) the systemd-booting Debian test-host image for molecule.
#
# The image is built with debootstrap from Debian's mirror and imported into
# podman as localhost/llm-onprem-testhost:<suite>-<key>, where <key> hashes
# this script and its inputs: an unchanged script reuses the cached image.
# Prints the image reference on stdout.
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

SUITE=${TESTHOST_SUITE:-bookworm}
MIRROR=${TESTHOST_MIRROR:-http://deb.debian.org/debian}
PACKAGES=systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,sudo,ca-certificates,util-linux,kmod
KEY=$(printf '%s %s %s\n' "$SUITE" "$MIRROR" "$PACKAGES" | cat - "$0" | sha256sum | cut -c1-12)
IMAGE=localhost/llm-onprem-testhost:$SUITE-$KEY
use_test_podman

if podman image exists "$IMAGE"; then
  log "test-host image $IMAGE is cached"
  echo "$IMAGE"
  exit 0
fi

# debootstrap lives in /usr/sbin, outside an ordinary user's PATH.
DEBOOTSTRAP=$(PATH=$PATH:/usr/sbin:/sbin command -v debootstrap) || die "debootstrap missing: run tests/harness/install-deps.sh"
start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/llm-onprem-image.XXXXXX")
trap 'as_root rm -rf "$work"' EXIT
root=$work/rootfs
log "building $IMAGE with debootstrap ($SUITE from $MIRROR); takes about two minutes"
as_root "$DEBOOTSTRAP" --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" \
  >"$work/debootstrap.log" 2>&1 || { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }

# A container has no consoles or kernel to tune: mask the units that would fail
# and leave machine-id empty so systemd makes one per container.
as_root sh -c ": > '$root/etc/machine-id'"
for unit in getty@tty1.service console-getty.service systemd-udevd.service \
  systemd-udev-trigger.service systemd-remount-fs.service sys-kernel-config.mount; do
  as_root ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
as_root rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"*
as_root sh -c "printf 'deb %s %s main\ndeb %s %s-updates main\n' '$MIRROR' '$SUITE' '$MIRROR' '$SUITE' > '$root/etc/apt/sources.list'"

as_root tar -C "$root" -c . | podman import \
  --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL org.llm-onprem.key=$KEY" - "$IMAGE" >/dev/null
log "built $IMAGE in $(( $(date +%s) - start )) s"
# Drop test-host images of older build scripts; containers still using one keep it.
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference='localhost/llm-onprem-testhost'); do
  [ "$old" = "$IMAGE" ] || podman rmi "$old" >/dev/null 2>&1 || true
done
echo "$IMAGE"
