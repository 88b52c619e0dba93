# shellcheck shell=bash
# Shared helpers for the llm-onprem test harness. Source, don't execute.

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$HARNESS_DIR/../.." && pwd)
CACHE_DIR=${LLM_ONPREM_CACHE:-$PROJECT_ROOT/.cache}
# The same per-clone cache under a project name, for playbooks and molecule.yml.
LLM_ONPREM_CACHE_DIR=$CACHE_DIR
export HARNESS_DIR PROJECT_ROOT CACHE_DIR LLM_ONPREM_CACHE_DIR
mkdir -p "$CACHE_DIR"

log() { printf '[harness] %s\n' "$*" >&2; }
die() { printf '[harness] ERROR: %s\n' "$*" >&2; exit 1; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root for: $* (run as root or install sudo)"
  fi
}

# Print the sha256 of the given files (content and names), for cache keys.
hash_inputs() {
  sha256sum "$@" | sha256sum | cut -c1-12
}

# Test hosts run under rootful podman: systemd containers need cgroups and
# networking that rootless podman often lacks (hybrid cgroups, no /dev/net/tun).
# As root that is plain `podman`; otherwise a wrapper in .cache/podman/bin runs
# `sudo podman`, put first on PATH for the test runs only.
use_test_podman() {
  PODMAN_WRAPPER_DIR=$CACHE_DIR/podman/bin
  if [ "$(id -u)" -eq 0 ]; then
    rm -rf "$PODMAN_WRAPPER_DIR"
    return 0
  fi
  command -v sudo >/dev/null || die "not root and sudo is missing: the test hosts need rootful podman"
  mkdir -p "$PODMAN_WRAPPER_DIR"
  cat >"$PODMAN_WRAPPER_DIR/podman" <<'WRAP'
#!/bin/sh
# llm-onprem test runs: rootful podman through sudo.
exec sudo -n env ${CONTAINERS_CONF:+CONTAINERS_CONF="$CONTAINERS_CONF"} podman "$@"
WRAP
  chmod +x "$PODMAN_WRAPPER_DIR/podman"
  case ":$PATH:" in *":$PODMAN_WRAPPER_DIR:"*) ;; *) export PATH="$PODMAN_WRAPPER_DIR:$PATH" ;; esac
}

# pip's download and wheel cache, shared by every test host of this clone
# (bind-mounted at root's pip cache), so two hosts never download the same
# wheel. pip writes its cache entries atomically, so lanes side by side are
# safe. apt's archive is not shared: apt-get fails at once, rather than
# waiting, when another host holds the archive's lock.
PIP_CACHE_MOUNT=$CACHE_DIR/pip:/root/.cache/pip
LLM_ONPREM_PIP_CACHE_MOUNT=$PIP_CACHE_MOUNT
export LLM_ONPREM_PIP_CACHE_MOUNT
cache_volume_args() {
  mkdir -p "$CACHE_DIR/pip"
  printf -- '--volume %s\n' "$PIP_CACHE_MOUNT"
}
