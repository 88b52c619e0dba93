#!/usr/bin/env bash
# The whole llm-onprem test suite: `make test` runs this, and so does CI (.ci/run).
#
# Stages: set-up (Debian packages, .venv), test-host image, podman check, lint
# (ansible-lint production profile, yamllint, ruff), unit tests, playbook syntax
# for every inventory, every molecule scenario on podman, the KVM scenario.
# Each stage's output goes to build/logs/<stage>.log and to the terminal; a
# failed stage does not stop the test stages after it, but set-up stages do.
# Ends with a timing summary and "stages: N passed, N failed".
#
# Usage: tests/run.sh [stage ...]   (default: all; e.g. tests/run.sh lint unit)
set -uo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/harness/lib.sh"
cd "$PROJECT_ROOT" || exit 1

export NO_COLOR=1 ANSIBLE_NOCOLOR=1 PY_COLORS=0 ANSIBLE_FORCE_COLOR=0
VENV=${LLM_ONPREM_VENV:-$PROJECT_ROOT/.venv}
LOG_DIR=$PROJECT_ROOT/build/logs
mkdir -p "$LOG_DIR"

declare -a SUMMARY=()
passed=0
failed=0

# run_stage NAME REQUIRED COMMAND...: time a stage, log it, record the result.
run_stage() {
  local name=$1 required=$2
  shift 2
  local start rc
  printf '\n===== stage %s =====\n' "$name"
  start=$(date +%s)
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  local took=$(( $(date +%s) - start ))
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1)); SUMMARY+=("$(printf '%-28s %6ss  ok' "$name" "$took")")
  else
    failed=$((failed + 1)); SUMMARY+=("$(printf '%-28s %6ss  FAILED (rc=%s, log build/logs/%s.log)' "$name" "$took" "$rc" "$name")")
    if [ "$required" = required ]; then
      summary
      exit 1
    fi
  fi
}

summary() {
  printf '\n===== timing summary =====\n'
  printf '%s\n' "${SUMMARY[@]}"
  printf 'stages: %d passed, %d failed\n' "$passed" "$failed"
}

stage_setup() { "$HARNESS_DIR/install-deps.sh"; }

stage_image() {
  local image
  image=$("$HARNESS_DIR/build-image.sh") || return 1
  echo "$image" >"$CACHE_DIR/testhost-image"
}

stage_podman() { "$HARNESS_DIR/podman-setup.sh" "$(cat "$CACHE_DIR/testhost-image")"; }

stage_lint() {
  local rc=0
  echo "--- yamllint"; yamllint --strict . || rc=1
  echo "--- ruff"; ruff check . || rc=1
  echo "--- ansible-lint (production profile)"; ansible-lint --profile production || rc=1
  echo "--- role READMEs match meta/argument_specs.yml"; python tools/role-readme.py --check || rc=1
  return "$rc"
}

stage_unit() {
  pytest -q -p no:cacheprovider tests/unit
  local rc=$?
  [ "$rc" -eq 5 ] && { echo "no unit tests were collected"; return 1; }
  return "$rc"
}

stage_syntax() {
  local inv rc=0
  for inv in inventories/*/; do
    echo "--- site.yml -i $inv"
    ansible-playbook site.yml -i "$inv" --syntax-check || rc=1
  done
  return "$rc"
}

molecule_env() {
  LLM_ONPREM_TESTHOST_IMAGE=$(cat "$CACHE_DIR/testhost-image")
  export LLM_ONPREM_TESTHOST_IMAGE
  # shellcheck disable=SC1091
  . "$CACHE_DIR/podman/env.sh"
}

# Molecule state lives in the clone, so two clones can test side by side.
stage_molecule() {
  molecule_env || return 1
  export MOLECULE_EPHEMERAL_DIRECTORY=$CACHE_DIR/molecule/$1
  mkdir -p "$MOLECULE_EPHEMERAL_DIRECTORY"
  molecule test -s "$1"
}

stage_kvm() { molecule_env && "$HARNESS_DIR/kvm/run-scenario.sh"; }

# The podman scenarios: every molecule/<name>/ except the KVM ones.
podman_scenarios() {
  local dir
  for dir in molecule/*/; do
    dir=${dir%/}; dir=${dir#molecule/}
    case "$dir" in kvm_*|gpu_*) ;; *) echo "$dir" ;; esac
  done
}

main() {
  local wanted=("$@")
  [ "${#wanted[@]}" -eq 0 ] && wanted=(setup image podman lint unit syntax molecule kvm)
  for stage in "${wanted[@]}"; do
    case "$stage" in
      setup) run_stage setup required stage_setup ;;
      image) run_stage image required stage_image ;;
      podman) run_stage podman required stage_podman ;;
      lint) run_stage lint optional stage_lint ;;
      unit) run_stage unit optional stage_unit ;;
      syntax) run_stage syntax optional stage_syntax ;;
      molecule)
        for scenario in $(podman_scenarios); do
          run_stage "molecule-$scenario" optional stage_molecule "$scenario"
        done ;;
      molecule-*) run_stage "$stage" optional stage_molecule "${stage#molecule-}" ;;
      kvm) run_stage kvm optional stage_kvm ;;
      *) die "unknown stage '$stage' (setup image podman lint unit syntax molecule molecule-<scenario> kvm)" ;;
    esac
    # Later stages use the tools set-up installed.
    [ "$stage" = setup ] && export PATH="$VENV/bin:$PATH"
  done
  export PATH="$VENV/bin:$PATH"
  summary
  [ "$failed" -eq 0 ]
}

export PATH="$VENV/bin:$PATH"
main "$@"
