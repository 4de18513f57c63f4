#!/usr/bin/env bash
# The main job in one command: set up .venv (or use the active one), install llmfoundry when it is missing,
# then run the offline quickstart. Arguments go to the module, e.g. ./quickstart.sh --max-steps 1000 --out DIR
# (relative paths are relative to where you run it; the default output folder is ./quickstart-out). The commands it
# prints at the end start with `. .venv/bin/activate` when .venv is not active in your shell.
set -euo pipefail
repo="$(cd "$(dirname "$0")" && pwd)"

if [ -n "${VIRTUAL_ENV:-}" ]; then
    python=python
else
    [ -x "$repo/.venv/bin/python" ] || python3 -m venv "$repo/.venv"
    python="$repo/.venv/bin/python"
fi

# Checked from / so that the checkout itself is not on sys.path: only an installed llmfoundry (and the
# packages the quickstart's steps import) counts.
if ! (cd / && "$python" -c 'import llmfoundry.train.entry, llmfoundry.export, llmfoundry.data.prep.cli, matplotlib' \
        2>/dev/null); then
    echo "Installing llmfoundry into $("$python" -c 'import sys; print(sys.prefix)') (one time)..."
    "$python" -m pip install -c "$repo/requirements/constraints.txt" -e "$repo"
fi

exec "$python" -m llmfoundry.quickstart "$@"
