#!/usr/bin/env bash
# The main job in one command: set up .venv (or use the active one), install llmfoundry when it is missing,
# then run the offline quickstart. Arguments go to the module, e.g. ./quickstart.sh --out my-run --max-steps 400
set -euo pipefail
cd "$(dirname "$0")"

if [ -n "${VIRTUAL_ENV:-}" ]; then
    python=python
else
    [ -x .venv/bin/python ] || python3 -m venv .venv
    python=.venv/bin/python
fi

if ! "$python" -c 'import llmfoundry.quickstart' 2>/dev/null; then
    echo "Installing llmfoundry into $("$python" -c 'import sys; print(sys.prefix)') (one time)..."
    "$python" -m pip install -c requirements/constraints.txt -e .
fi

exec "$python" -m llmfoundry.quickstart "$@"
