#!/usr/bin/env bash
# Exported folders must load in transformers 5.x (what serving stacks run), while our own venv stays on 4.57
# (mosaicml-streaming pins transformers<5). This exports tiny native-MPT, Llama and remote-code folders with the
# main venv, then loads each one under transformers 5 in a side venv and compares logits and greedy tokens.
#   ./scripts/check_transformers5.sh        (MAIN_PY=path/to/python to use another main interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
MAIN_PY=${MAIN_PY:-$repo/.venv/bin/python}
TF5=$repo/.venv-tf5
start=$SECONDS

if ! "$TF5/bin/python" -c 'import sys, transformers; sys.exit(transformers.__version__.split(".")[0] != "5")' \
    >/dev/null 2>&1; then
  rm -rf "$TF5"
  "$MAIN_PY" -m venv "$TF5"
  "$TF5/bin/python" -m pip install -q --disable-pip-version-check 'transformers>=5,<6'
fi
# torch comes from the main venv, appended after the side venv's own packages by a .pth file. It is written
# after the install so that pip never sees the main venv (and never downgrades or removes anything there).
main_site=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
tf5_site=$("$TF5/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$main_site" > "$tf5_site/zz_llmfoundry_main_venv.pth"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 HF_MODULES_CACHE="$work/modules"
"$MAIN_PY" "$repo/scripts/check_transformers5.py" export "$work/folders"
# Run from the scratch folder so that the repository is not on sys.path either.
(cd "$work" && "$TF5/bin/python" "$repo/scripts/check_transformers5.py" check "$work/folders")
echo "transformers 5 check passed in $((SECONDS - start)) s"
