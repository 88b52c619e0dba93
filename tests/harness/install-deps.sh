#!/usr/bin/env bash
# Install what the test suite and the demo need, idempotently:
#   - Debian packages (podman, runc, debootstrap, QEMU, njs, ...) when missing;
#   - the project virtualenv (.venv) from requirements.txt, rebuilt only when
#     requirements.txt changes (a stamp holds its hash).
# Works as root (CI) and as a user with sudo.
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

# njs: the command-line njs (the engine of nginx's js module) runs the gateway's
# router under tests/unit/test_gateway_njs.py.
APT_PACKAGES=(podman runc debootstrap uidmap slirp4netns fuse-overlayfs
  qemu-system-x86 qemu-utils openssh-client e2fsprogs
  python3 python3-venv make git curl ca-certificates njs)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "Debian packages present"
fi

VENV=${LLM_ONPREM_VENV:-$PROJECT_ROOT/.venv}
want=$(sha256sum "$PROJECT_ROOT/requirements.txt" | cut -c1-16)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" = "$want" ]; then
  log "virtualenv $VENV is up to date"
else
  log "building virtualenv $VENV from requirements.txt"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$PROJECT_ROOT/requirements.txt"
  echo "$want" >"$VENV/.requirements-hash"
fi
