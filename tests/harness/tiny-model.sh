#!/usr/bin/env bash
# Build the tiny test model on this (control) machine:
#   tests/harness/tiny-model.sh OUT_DIR
# Uses its own virtualenv (.cache/fixture-venv) with exactly the packages of
# tests/fixtures/tiny_model/requirements.txt, rebuilt only when that file
# changes. The CPU build of torch comes from pip's configured sources (a
# find-links directory on CI machines) or else from PyTorch's CPU index
# (LLM_ONPREM_TORCH_INDEX, default https://download.pytorch.org/whl/cpu).
# The model is built once per clone into .cache/tiny-model (the builder is
# deterministic and idempotent: a stamp holds its script's hash) and copied to
# OUT_DIR when OUT_DIR differs, so every scenario and the demo share one build.
# Prints "built tiny model in OUT_DIR" when OUT_DIR changed.
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
out=$1
fixture=$PROJECT_ROOT/tests/fixtures/tiny_model
venv=$CACHE_DIR/fixture-venv
want=$(hash_inputs "$fixture/requirements.txt")

# One builder at a time per clone (scenarios run side by side in `make test`);
# a second caller waits, then finds the venv and the model ready.
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.tiny-model.lock"
flock 9

if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.requirements-hash" 2>/dev/null)" = "$want" ]; then
  log "fixture virtualenv $venv is up to date"
else
  log "building fixture virtualenv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # Local version first (find-links), PyTorch's CPU index only when that fails.
  if ! "$venv/bin/pip" install -q --no-deps 'torch==2.13.0+cpu' 2>/dev/null; then
    log "torch 2.13.0+cpu is not in pip's configured sources; trying ${LLM_ONPREM_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
    "$venv/bin/pip" install -q --no-deps --index-url "${LLM_ONPREM_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" 'torch==2.13.0+cpu'
  fi
  # The rest from PyPI; torch's own dependencies come along (torch stays +cpu).
  "$venv/bin/pip" install -q -r "$fixture/requirements.txt" 'torch==2.13.0+cpu'
  echo "$want" >"$venv/.requirements-hash"
fi

cache=$CACHE_DIR/tiny-model
"$venv/bin/python" "$fixture/build_tiny_model.py" --out "$cache"
if [ -f "$out/.tiny-model-stamp" ] && diff -rq "$cache" "$out" >/dev/null 2>&1; then
  echo "tiny model up to date in $out"
else
  rm -rf "$out.tmp"
  mkdir -p "$(dirname "$out")"
  cp -a "$cache" "$out.tmp"
  rm -rf "$out"
  mv "$out.tmp" "$out"
  echo "built tiny model in $out (a copy of $cache)"
fi
