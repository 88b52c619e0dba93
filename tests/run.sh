#!/usr/bin/env bash
# The whole llm-onprem test suite: `make test` runs this, and so does CI (.ci/run).
#
# Stages: set-up (Debian packages, .venv), test-host image, podman check, lint
# (ansible-lint production profile, yamllint, ruff), unit tests, playbook syntax
# for every inventory, every molecule scenario on podman, the KVM scenario.
# Each stage's output goes to build/logs/<stage>.log and to the terminal; a
# failed stage does not stop the test stages after it, but set-up stages do.
# The molecule scenarios and the KVM scenario run in LLM_ONPREM_TEST_LANES
# lanes side by side (default 2: much of a scenario's time is waiting on
# podman exec and package downloads, not CPU); each lane runs its stages one
# after another, and their logs are printed whole, in order, when all are done.
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

# record_result NAME SECONDS RC: count the stage and add its summary line.
record_result() {
  if [ "$3" -eq 0 ]; then
    passed=$((passed + 1)); SUMMARY+=("$(printf '%-28s %6ss  ok' "$1" "$2")")
  else
    failed=$((failed + 1)); SUMMARY+=("$(printf '%-28s %6ss  FAILED (rc=%s, log build/logs/%s.log)' "$1" "$2" "$3" "$1")")
  fi
}

# run_stage NAME REQUIRED COMMAND...: time a stage, log it, record the result.
run_stage() {
  local name=$1 required=$2
  shift 2
  local start rc
  printf '\n===== stage %s =====\n' "$name"
  start=$(date +%s)
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  rc=${PIPESTATUS[0]}
  record_result "$name" "$(( $(date +%s) - start ))" "$rc"
  if [ "$rc" -ne 0 ] && [ "$required" = required ]; then
    summary
    exit 1
  fi
}

# Expected minutes of each scenario on a 2-core machine with two lanes
# (measured; llm_service includes building the serve stage image when it is
# not cached, monitoring the service stage on top of it), for spreading them
# over the lanes: longest first, each to the least loaded lane. The two that
# need the serve stage land in different lanes, so the one that starts later
# finds it built.
stage_weight() {
  case "$1" in
    kvm) echo 15 ;; molecule-llm_service) echo 12 ;; molecule-llm_runtime|molecule-monitoring) echo 10 ;;
    molecule-quantize|molecule-gateway) echo 6 ;; molecule-nvidia_driver) echo 4 ;; molecule-model_store) echo 3 ;;
    molecule-host_tuning) echo 2 ;; molecule-preflight) echo 1 ;;
    *) echo 5 ;;
  esac
}

stage_command() {
  case "$1" in
    kvm) echo stage_kvm ;;
    molecule-*) echo "stage_molecule ${1#molecule-}" ;;
  esac
}

# run_lanes STAGE...: the stages in lanes side by side; results as run_stage's.
run_lanes() {
  local lanes=${LLM_ONPREM_TEST_LANES:-2} dir="$LOG_DIR/lanes" i stage best
  local -a load=() plan=() pids=()
  [ "$lanes" -ge 1 ] 2>/dev/null || die "LLM_ONPREM_TEST_LANES must be a whole number >= 1, not '$lanes'"
  rm -rf "$dir"; mkdir -p "$dir"
  for ((i = 0; i < lanes; i++)); do load[i]=0; plan[i]=""; done
  for stage in $(for stage in "$@"; do echo "$(stage_weight "$stage") $stage"; done | sort -rn -s -k1,1 | cut -d' ' -f2); do
    best=0
    for ((i = 1; i < lanes; i++)); do [ "${load[i]}" -lt "${load[best]}" ] && best=$i; done
    load[best]=$(( load[best] + $(stage_weight "$stage") ))
    plan[best]="${plan[best]} $stage"
  done
  for ((i = 0; i < lanes; i++)); do
    [ -n "${plan[i]}" ] || continue
    printf '\n===== lane %d:%s =====\n' "$i" "${plan[i]}"
    (
      for stage in ${plan[i]}; do
        start=$(date +%s)
        printf '[lane %d] %s started\n' "$i" "$stage"
        # shellcheck disable=SC2046
        $(stage_command "$stage") >"$LOG_DIR/$stage.log" 2>&1
        rc=$?
        printf '%s %s %s\n' "$stage" "$(( $(date +%s) - start ))" "$rc" >"$dir/$stage.result"
        printf '[lane %d] %s finished: rc %s after %ss\n' "$i" "$stage" "$rc" "$(( $(date +%s) - start ))"
      done
    ) &
    pids+=("$!")
  done
  wait "${pids[@]}"
  for stage in "$@"; do
    local took=0 rc=1
    [ -f "$dir/$stage.result" ] && read -r _ took rc <"$dir/$stage.result"
    printf '\n===== stage %s =====\n' "$stage"
    cat "$LOG_DIR/$stage.log" 2>/dev/null
    record_result "$stage" "$took" "$rc"
  done
}

# CI stops a run after 90 minutes; the suite aims at well under it.
BUDGET_S=${LLM_ONPREM_TEST_BUDGET_S:-5400}
TARGET_S=${LLM_ONPREM_TEST_TARGET_S:-3000}
SUITE_START=$(date +%s)

summary() {
  local took=$(( $(date +%s) - SUITE_START ))
  printf '\n===== timing summary =====\n'
  printf '%s\n' "${SUMMARY[@]}"
  printf '%-28s %6ss  (wall clock, lanes side by side)\n' total "$took"
  printf 'budget: %dm%02ds of %dm (%d%%); target under %dm: %s\n' $((took / 60)) $((took % 60)) $((BUDGET_S / 60)) \
    $((took * 100 / BUDGET_S)) $((TARGET_S / 60)) "$([ "$took" -lt "$TARGET_S" ] && echo met || echo MISSED)"
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
  echo "--- dashboards match tools/dashboards.py"; python tools/dashboards.py --check || rc=1
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
  # The shared pip cache the platforms mount (LLM_ONPREM_PIP_CACHE_MOUNT) must exist.
  cache_volume_args >/dev/null
}

# Molecule state lives in the clone, so two clones can test side by side.
# A scenario whose subject is a later pipeline step names, in
# molecule/<scenario>/stage, the cached stage image it starts from
# (tests/harness/stage-image.sh builds it once per input hash and reuses it);
# molecule.yml reads it as ${LLM_ONPREM_STAGE_IMAGE}.
stage_molecule() {
  molecule_env || return 1
  if [ -f "molecule/$1/stage" ]; then
    LLM_ONPREM_STAGE_IMAGE=$("$HARNESS_DIR/stage-image.sh" "$(cat "molecule/$1/stage")") || return 1
    export LLM_ONPREM_STAGE_IMAGE
  fi
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
  local wanted=("$@") parallel=()
  [ "${#wanted[@]}" -eq 0 ] && wanted=(setup image podman lint unit syntax molecule kvm)
  for stage in "${wanted[@]}"; do
    case "$stage" in
      setup) run_stage setup required stage_setup ;;
      image) run_stage image required stage_image ;;
      podman) run_stage podman required stage_podman ;;
      lint) run_stage lint optional stage_lint ;;
      unit) run_stage unit optional stage_unit ;;
      syntax) run_stage syntax optional stage_syntax ;;
      # Scenarios are collected and run in lanes after the other stages.
      molecule)
        for scenario in $(podman_scenarios); do parallel+=("molecule-$scenario"); done ;;
      molecule-*|kvm) parallel+=("$stage") ;;
      *) die "unknown stage '$stage' (setup image podman lint unit syntax molecule molecule-<scenario> kvm)" ;;
    esac
    # Later stages use the tools set-up installed.
    [ "$stage" = setup ] && export PATH="$VENV/bin:$PATH"
  done
  export PATH="$VENV/bin:$PATH"
  if [ "${#parallel[@]}" -eq 1 ]; then
    run_stage "${parallel[0]}" optional $(stage_command "${parallel[0]}")
  elif [ "${#parallel[@]}" -gt 1 ]; then
    run_lanes "${parallel[@]}"
  fi
  summary
  [ "$failed" -eq 0 ]
}

export PATH="$VENV/bin:$PATH"
main "$@"
