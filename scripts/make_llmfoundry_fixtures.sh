#!/usr/bin/env bash
# Regenerate tests/fixtures/llmfoundry/ with MosaicML's llm-foundry 0.22.0 and Composer 0.32.1 (see the .py and
# tests/fixtures/README.md). They pin torch 2.7 and dozens of packages; the side venv .venv-llmfoundry gets both
# with --no-deps, only the small packages their imports need, and transformers 4.51.3 (the version llm-foundry
# 0.22 pins, so config.json says what a real llm-foundry export says). torch comes from the main venv.
#   ./scripts/make_llmfoundry_fixtures.sh        (MAIN_PY=path/to/python to use another main interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
MAIN_PY=${MAIN_PY:-$repo/.venv/bin/python}
SIDE=$repo/.venv-llmfoundry
OUT=$repo/tests/fixtures/llmfoundry

if ! "$SIDE/bin/python" -c 'import importlib.metadata as m; assert m.version("llm-foundry") == "0.22.0"' \
    >/dev/null 2>&1; then
  rm -rf "$SIDE"
  "$MAIN_PY" -m venv "$SIDE"
  pip=("$SIDE/bin/python" -m pip install -q --disable-pip-version-check)
  "${pip[@]}" --no-deps 'llm-foundry==0.22.0' 'mosaicml==0.32.1' 'torchmetrics==1.7.4' 'lightning-utilities==0.15.3'
  "${pip[@]}" 'transformers==4.51.3' 'py-cpuinfo==9.0.0' 'coolname<3' 'tabulate==0.9.0' 'einops==0.8.1' \
    'omegaconf<3' 'numpy<2.3' 'packaging<25.1' psutil importlib-metadata tenacity beautifulsoup4 catalogue
fi
# torch comes from the main venv, appended after the side venv's own packages by a .pth file. It is written
# after the install so that pip never sees the main venv (and never downgrades or removes anything there).
main_site=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
side_site=$("$SIDE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$main_site" > "$side_site/zz_llmfoundry_main_venv.pth"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore
# Run from the scratch folder so that our llmfoundry package is not on sys.path: `import llmfoundry` is MosaicML's.
(cd "$work" && "$SIDE/bin/python" "$repo/scripts/make_llmfoundry_fixtures.py" "$work/out")
rm -rf "$OUT"
cp -r "$work/out" "$OUT"
echo "wrote $OUT ($(du -sh "$OUT" | cut -f1))"
