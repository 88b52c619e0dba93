# shellcheck shell=bash
# Shared helpers for the llm-onprem test harness. Source, don't execute.

HARNESS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_ROOT=$(cd "$HARNESS_DIR/../.." && pwd)
CACHE_DIR=${LLM_ONPREM_CACHE:-$PROJECT_ROOT/.cache}
export HARNESS_DIR PROJECT_ROOT CACHE_DIR
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
