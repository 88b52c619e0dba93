#!/usr/bin/env bash
# Build (or reuse) a cached stage image: a test host on which the roles of a
# pipeline stage have converged, committed as a podman image, so scenarios
# whose subject is a later step start from it instead of building it again.
#
#   tests/harness/stage-image.sh NAME      prints the image reference
#
# A stage is a directory tests/harness/stages/NAME/ with
#   playbook.yml        what converges the stage on the host (prepare + roles);
#   group_vars/all.yml  its inventory values (scenarios that start from the
#                       stage link the same file, so both see one profile);
#   base                "testhost" (the image of build-image.sh) or the name
#                       of the stage it builds on;
#   inputs              project paths (one a line) whose files can change it;
#   podman-args         (optional) extra options for the build container, the
#                       same the scenarios' platforms give (e.g. --cap-add
#                       NET_ADMIN where the gateway loads its firewall).
# The image is localhost/llm-onprem-stage-NAME:<key>, where <key> hashes the
# base image, every file under the listed inputs and this script: a change
# to any of them builds a new image, anything else reuses it. Older images of
# the stage are removed. One build at a time per stage (a lock in the cache);
# a second caller waits and then finds it built.
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

NAME=${1:?usage: stage-image.sh NAME}
STAGE_DIR=$HARNESS_DIR/stages/$NAME
[ -f "$STAGE_DIR/playbook.yml" ] && [ -f "$STAGE_DIR/inputs" ] && [ -f "$STAGE_DIR/base" ] \
  || die "unknown stage '$NAME': $STAGE_DIR needs playbook.yml, inputs and base"
use_test_podman
# shellcheck disable=SC1091
[ -f "$CACHE_DIR/podman/env.sh" ] && . "$CACHE_DIR/podman/env.sh"

base=$(cat "$STAGE_DIR/base")
if [ "$base" = testhost ]; then
  base_image=$("$HARNESS_DIR/build-image.sh")
else
  base_image=$("$0" "$base")
fi

# The key: the base image, this script, the stage's own files and every file
# under its inputs (names and contents; caches and byte code left out).
stage_key() {
  local -a paths=()
  local line
  while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    [ -e "$PROJECT_ROOT/$line" ] || die "stage $NAME: input '$line' does not exist"
    paths+=("$line")
  done <"$STAGE_DIR/inputs"
  {
    echo "$base_image"
    cd "$PROJECT_ROOT" &&
      find "${paths[@]}" "${STAGE_DIR#"$PROJECT_ROOT"/}" "${0#"$PROJECT_ROOT"/}" -type f \
        -not -path '*/__pycache__/*' -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-12
}
KEY=$(stage_key)
IMAGE=localhost/llm-onprem-stage-$NAME:$KEY

exec 8>"$CACHE_DIR/.stage-$NAME.lock"
flock 8
if podman image exists "$IMAGE"; then
  log "stage image $IMAGE is cached"
  echo "$IMAGE"
  exit 0
fi

start=$(date +%s)
ctr=llm-onprem-stage-$NAME-build
work=$(mktemp -d "${TMPDIR:-/tmp}/llm-onprem-stage.XXXXXX")
cleanup() { podman rm -f "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
podman rm -f "$ctr" >/dev/null 2>&1 || true
log "building stage image $IMAGE from $base_image (stage $NAME)"
# The same container options as the scenarios' platforms: systemd, 1 GiB of
# /dev/shm for vLLM's CPU engine, the per-clone download caches.
extra_args=$(cat "$STAGE_DIR/podman-args" 2>/dev/null || true)
# shellcheck disable=SC2046,SC2086
podman run -d --name "$ctr" --hostname "$ctr" --systemd=always --shm-size=1g $extra_args \
  $(cache_volume_args) "$base_image" /sbin/init >/dev/null
for _ in $(seq 1 60); do
  state=$(podman exec "$ctr" systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 1
done

# The inventory: this container, and the stage's own group_vars.
mkdir -p "$work/inventory"
printf 'all:\n  hosts:\n    %s:\n      ansible_connection: podman_pipelined\n' "$ctr" >"$work/inventory/hosts.yml"
ln -s "$STAGE_DIR/group_vars" "$work/inventory/group_vars"
if ! ANSIBLE_CONFIG=$PROJECT_ROOT/ansible.cfg MOLECULE_PROJECT_DIRECTORY=$PROJECT_ROOT \
  ansible-playbook -i "$work/inventory" "$STAGE_DIR/playbook.yml" >"$CACHE_DIR/stage-$NAME.log" 2>&1; then
  tail -n 40 "$CACHE_DIR/stage-$NAME.log" >&2
  die "stage $NAME did not converge (log: $CACHE_DIR/stage-$NAME.log); no image was written"
fi
# A stopped container commits a consistent file system (no half-written
# journal or state); /run and /tmp are tmpfs and not part of the image.
podman stop -t 30 "$ctr" >/dev/null
podman commit -q --change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3' \
  --change "LABEL org.llm-onprem.stage=$NAME" --change "LABEL org.llm-onprem.key=$KEY" "$ctr" "$IMAGE" >/dev/null
log "built stage image $IMAGE in $(( $(date +%s) - start )) s"
for old in $(podman images --format '{{.Repository}}:{{.Tag}}' --filter reference="localhost/llm-onprem-stage-$NAME"); do
  [ "$old" = "$IMAGE" ] || podman rmi "$old" >/dev/null 2>&1 || true
done
echo "$IMAGE"
