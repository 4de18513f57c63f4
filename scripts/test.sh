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

# Reinstall whenever setup.py or the constraints changed since the last install into this environment.
stamp="$("$PY" -c 'import sys; print(sys.prefix)')/.llmfoundry-install"
wanted="$(cat setup.py requirements/constraints.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "Installing llmfoundry with the dev extras (first run takes a few minutes)..."
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -c requirements/constraints.txt -e '.[dev]'
  echo "$wanted" > "$stamp"
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
if [ $# -gt 0 ]; then
  exec "$PY" -m pytest "$@"
fi
# The whole suite runs in three pytest processes. mosaicml-streaming leaves a few open files behind for every
# dataset a process ever built (its shared-memory handles), and each new dataset opens handles to all earlier
# ones, so one process for ~1,000 tests comes close to the common 20,000 open-file limit.
status=0
"$PY" -m pytest tests/data || status=$?
"$PY" -m pytest tests/eval tests/inference tests/models tests/export || status=$?
"$PY" -m pytest tests --ignore=tests/data --ignore=tests/eval --ignore=tests/inference --ignore=tests/models \
  --ignore=tests/export || status=$?
exit $status
