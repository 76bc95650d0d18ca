#!/usr/bin/env bash
# The degraded-rendering corpora of the repairing prior (issue 27), resumable: rerun the same command to go on.
#   1. the evaluation corpus: the evaluation scenes fitted on their protocol's 3 training views only (scoring only);
#   2. the training corpus: every training scene imported by scripts/import_training_data.py, 3/6/9 views, and
#      forward-facing arcs of the 360-degree captures (views within 15 degrees of one view's direction, 3 views):
#      the photographed captures' arcs first, as they are closest to the LLFF and phone captures users bring.
# Usage: bash scripts/make_degraded_corpus.sh   (environment: JOBS fits at a time, default 2; EVAL=0 skips step 1)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
JOBS=${JOBS:-2}
[ -d outputs/train-scenes/meshes ] || $PY scripts/import_training_data.py --meshes
if [ "${EVAL:-1}" != 0 ]; then
  for scene in fern horns trex juicebox scan24 scan37 lego; do
    [ -f "outputs/bench-data/$scene/transforms.json" ] || { echo "outputs/bench-data/$scene missing: import the evaluation scenes first (README, benchmark section)"; exit 2; }
  done
  $PY -m reconfusion data degrade --scenes outputs/bench-data/{fern,horns,trex,juicebox,scan24,scan37,lego} \
    --out outputs/degraded-eval --views 3 --jobs "$JOBS"
fi
$PY -m reconfusion data degrade --scenes outputs/train-scenes/{captures,colmap,photos,strecha} --out outputs/degraded \
  --views 3 --arc-degrees 15 --jobs "$JOBS"
$PY -m reconfusion data degrade --scenes outputs/train-scenes --out outputs/degraded --arc-degrees 15 --jobs "$JOBS"
