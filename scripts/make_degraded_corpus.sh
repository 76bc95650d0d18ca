#!/usr/bin/env bash
# The degraded-rendering corpora of the repairing prior (issue 27), resumable: rerun the same command to go on.
#   1. the evaluation corpus: the evaluation scenes fitted on their protocol's 3 training views only (scoring only);
#   2. the forward-facing corpus (outputs/degraded-arcs): arcs of the 360-degree training captures (views within
#      15 degrees of one view's direction) fitted on 3 views, as LLFF's and phone captures are; photographs first;
#   3. the training corpus: every training scene imported by scripts/import_training_data.py, 3/6/9 views.
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
ARCS=(--out outputs/degraded-arcs --views 3 --arc-degrees 15 --arcs-only --jobs "$JOBS")
$PY -m reconfusion data degrade --scenes outputs/train-scenes/{captures,colmap,photos,strecha} "${ARCS[@]}"
$PY -m reconfusion data degrade --scenes outputs/train-scenes "${ARCS[@]}"
$PY -m reconfusion data degrade --scenes outputs/train-scenes --out outputs/degraded --jobs "$JOBS"
