#!/usr/bin/env bash
# Make podman able to boot the systemd test hosts, changing as little as possible.
#
# The probe boots a throw-away container from the test-host image (default
# network, systemd as PID 1) and waits for `systemctl is-system-running`.
# Test hosts always run under rootful podman (as root, or through sudo: see
# use_test_podman in lib.sh).
#   1. With the existing podman configuration: if the probe passes, nothing
#      is changed.
#   2. Otherwise a project-local containers.conf under .cache/podman/ that uses
#      runc through tests/harness/runc-clamp (clamps OCI rlimits to what the
#      caller may set: hosts without CAP_SYS_RESOURCE), cgroupfs and file
#      events (no systemd as PID 1 / D-Bus), passed with CONTAINERS_CONF.
# /etc and ~/.config are never touched. Writes .cache/podman/env.sh for the
# test runner to source, and says what it chose. Fails loudly when nothing works.
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

IMAGE=${1:?usage: podman-setup.sh IMAGE}
conf_dir=$CACHE_DIR/podman
env_file=$conf_dir/env.sh
mkdir -p "$conf_dir"
unset CONTAINERS_CONF
use_test_podman
declare -a exports=()
[ -d "$PODMAN_WRAPPER_DIR" ] && exports+=("export PATH=$(printf '%q' "$PODMAN_WRAPPER_DIR"):\$PATH")

probe() {
  local name=llm-onprem-probe-$$ state=""
  podman rm -f "$name" >/dev/null 2>&1 || true
  if ! podman run -d --name "$name" --systemd=always "$IMAGE" /sbin/init >"$conf_dir/probe.log" 2>&1; then
    return 1
  fi
  for _ in $(seq 1 30); do
    state=$(podman exec "$name" systemctl is-system-running 2>>"$conf_dir/probe.log" || true)
    case "$state" in running|degraded) break ;; esac
    sleep 1
  done
  echo "systemd state in the probe container: ${state:-none}" >>"$conf_dir/probe.log"
  podman logs "$name" >>"$conf_dir/probe.log" 2>&1 || true
  podman rm -f "$name" >/dev/null 2>&1 || true
  case "$state" in running|degraded) return 0 ;; *) return 1 ;; esac
}

report_failure() { log "$1 failed: $(grep -v '^$' "$conf_dir/probe.log" | tail -n 1)"; }

if probe; then
  log "podman boots systemd containers with the existing configuration: nothing changed"
  printf '%s\n' "${exports[@]}" >"$env_file"
  exit 0
fi
report_failure "podman with the existing configuration"

command -v runc >/dev/null || [ -x /usr/sbin/runc ] || die "runc missing: run tests/harness/install-deps.sh"
conf=$conf_dir/containers.conf
cat >"$conf" <<CONF
# Written by tests/harness/podman-setup.sh for llm-onprem test runs only.
[engine]
runtime = "runc-clamp"
cgroup_manager = "cgroupfs"
events_logger = "file"

[engine.runtimes]
runc-clamp = ["$HARNESS_DIR/runc-clamp"]
CONF
export CONTAINERS_CONF=$conf
if ! probe; then
  cat "$conf_dir/probe.log" >&2
  die "podman cannot boot the test-host image even with $conf (see above)"
fi
exports+=("export CONTAINERS_CONF=$(printf '%q' "$conf")")
printf '%s\n' "${exports[@]}" >"$env_file"
log "podman needed changes; using $conf for test runs only (runtime runc via runc-clamp, cgroupfs, file events logger)"
