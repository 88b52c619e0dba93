#!/usr/bin/env bash
# Make podman able to boot the systemd test hosts, changing as little as possible.
#
# 1. Probe: run a throw-away container from the test-host image with the
#    user's own podman configuration. If that works, nothing is changed.
# 2. Otherwise write a project-local containers.conf under .cache/podman/ that
#    uses runc through tests/harness/runc-clamp (clamps OCI rlimits to what this
#    process may set: hosts without CAP_SYS_RESOURCE), cgroupfs and file events
#    (hosts without systemd as PID 1 / D-Bus). It is used only by the project's
#    test runs, through CONTAINERS_CONF; /etc and ~/.config are never touched.
# 3. Probe again and fail loudly if podman still cannot run a container.
#
# Writes .cache/podman/env.sh for the test runner to source, and says what it did.
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

IMAGE=${1:?usage: podman-setup.sh IMAGE}
conf_dir=$CACHE_DIR/podman
env_file=$conf_dir/env.sh
mkdir -p "$conf_dir"

probe() {
  podman run --rm --network none --systemd=always "$IMAGE" /bin/true >"$conf_dir/probe.log" 2>&1
}

if [ -z "${CONTAINERS_CONF:-}" ] && probe; then
  log "podman works with your own configuration: nothing changed"
  : >"$env_file"
  exit 0
fi
[ -n "${CONTAINERS_CONF:-}" ] && log "CONTAINERS_CONF is set to $CONTAINERS_CONF; probing the project configuration instead"
[ -s "$conf_dir/probe.log" ] && log "podman with the default configuration failed: $(tail -n 1 "$conf_dir/probe.log")"

for bin in runc; do
  command -v "$bin" >/dev/null || die "$bin missing: run tests/harness/install-deps.sh"
done
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
  die "podman cannot run the test-host image even with $conf (see above)"
fi
printf 'export CONTAINERS_CONF=%q\n' "$conf" >"$env_file"
log "podman needed changes; using $conf for test runs only (runtime runc via runc-clamp, cgroupfs, file events logger)"
