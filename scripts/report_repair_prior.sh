#!/usr/bin/env bash
# Scores the repairing prior (and, for comparison, the bundled prior) on degraded renderings of the evaluation
# scenes (outputs/degraded-eval, fitted on their protocol's 3 training views only) and writes docs/repair_prior/:
# restoration tables and contact sheets, the model card and loss curves of the run, and the corpus summary.
# Usage: bash scripts/report_repair_prior.sh [PRIOR_RUN_DIR]   (after scripts/train_repair_prior.sh has exported)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-outputs/repair-prior}
PY=${PYTHON:-.venv/bin/python}
DOCS=docs/repair_prior
EXAMPLES=${EXAMPLES:-48}
mkdir -p "$DOCS"
[ -f "$RUN/prior/reconfusion_prior.json" ] || { echo "$RUN/prior: no exported prior yet; run scripts/train_repair_prior.sh"; exit 2; }
OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior.evaluation "$RUN/prior" --corpus outputs/degraded-eval --examples "$EXAMPLES" \
  --image "$DOCS/restoration.png" --report "$DOCS/restoration.md"
OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior.evaluation "$RUN/prior" --corpus outputs/degraded-eval --examples "$EXAMPLES" \
  --adapt-steps "${ADAPT_STEPS:-20}" --image "$DOCS/restoration_adapted.png" --report "$DOCS/restoration_adapted.md"
HELD_OUT=${HOLDOUT:-$(cat scripts/repair_holdout_scenes.txt)}   # as scripts/train_repair_prior.sh held them out
FITTED=$(ls outputs/degraded/fits)
VALIDATION=$(for s in $HELD_OUT; do grep -qx "$s" <<< "$FITTED" && echo "$s"; done | tr '\n' ' ')
if [ -n "$VALIDATION" ]; then   # training scenes the run never saw: validation
  OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior.evaluation "$RUN/prior" --corpus outputs/degraded --examples "$EXAMPLES" \
    --ts 0.2 0.4 --scenes $VALIDATION --report "$DOCS/restoration_held_out_training_scenes.md"
fi
OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior.evaluation "$RUN/prior" --corpus outputs/degraded --examples "$EXAMPLES" \
  --ts 0.2 0.4 --report "$DOCS/restoration_training_scenes.md"   # mostly scenes it trained on: the generalisation gap
OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior.evaluation reconfusion/assets/default_prior --corpus outputs/degraded-eval \
  --examples "$EXAMPLES" --image "$DOCS/restoration_bundled_prior.png" --report "$DOCS/restoration_bundled_prior.md"
cp "$RUN/prior/README.md" "$DOCS/model_card.md"
cp "$RUN/prior/loss_curves.png" "$DOCS/loss_curves.png" 2>/dev/null || true
cp "$RUN/prior/validation.png" "$DOCS/validation.png" 2>/dev/null || true
cp "$RUN/prior/manifest.json" "$DOCS/manifest.json"
$PY -m reconfusion data degrade --scenes outputs/bench-data/{fern,horns,trex,juicebox,scan24,scan37,lego} \
  --out outputs/degraded-eval --views 3 --report-only --report "$DOCS/evaluation_corpus.md"
$PY -m reconfusion data degrade --scenes outputs/train-scenes --out outputs/degraded --report-only --report docs/degraded_corpus.md
cp outputs/degraded/corpus.json docs/degraded_corpus.json
echo "written: $DOCS/ and docs/degraded_corpus.{md,png,json}"
