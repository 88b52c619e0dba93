#!/usr/bin/env bash
# Build the tiny test model on this (control) machine:
#   tests/harness/tiny-model.sh OUT_DIR
# Uses its own virtualenv (.cache/fixture-venv) with exactly the packages of
# tests/fixtures/tiny_model/requirements.txt, rebuilt only when that file
# changes. The CPU build of torch comes from pip's configured sources (a
# find-links directory on CI machines) or else from PyTorch's CPU index
# (LLM_ONPREM_TORCH_INDEX, default https://download.pytorch.org/whl/cpu).
# The builder itself is idempotent (a stamp in OUT_DIR).
set -euo pipefail
# shellcheck source=tests/harness/lib.sh
. "$(dirname "$0")/lib.sh"

[ $# -eq 1 ] || die "usage: $0 OUT_DIR"
out=$1
fixture=$PROJECT_ROOT/tests/fixtures/tiny_model
venv=$CACHE_DIR/fixture-venv
want=$(hash_inputs "$fixture/requirements.txt")

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

"$venv/bin/python" "$fixture/build_tiny_model.py" --out "$out"
