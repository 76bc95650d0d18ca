#!/usr/bin/env bash
# Trains the repairing prior (repair preset: 128 px on the bundled TAEF2) from scratch on the degraded-rendering
# corpora (scripts/make_degraded_corpus.sh: outputs/degraded and, where made, its forward-facing arcs in
# outputs/degraded-arcs) and the training scenes with synthetic degradations. Never on an
# evaluation scene. Rerun the same command to resume from the last checkpoint.
# Usage: bash scripts/train_repair_prior.sh [RUN_DIR]
# Environment: CORPUS_WEIGHT (share of corpus examples against scene examples, default 3), ARC_WEIGHT (share of the
# forward-facing arcs' examples, default 3), STEPS, MINUTES (0 = no limit),
# BATCH (8 on a CPU; e.g. BATCH=64 on a GPU), THREADS, LR (peak learning rate, default 1e-4), INIT (a prior folder
# to start from instead of fresh weights, e.g. the last exported one when the checkpoints are gone; a repairing prior
# without the preset's warped input views is widened to take them), HOLDOUT (training
# scenes kept out for validation, default: scripts/repair_holdout_scenes.txt; HOLDOUT=none trains on all), RECOLOUR (0: no colour augmentation),
# VALIDATE_EVERY (steps between scores of the held-out scenes' restoration, default 100; 0: never).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-outputs/repair-prior}
PY=${PYTHON:-.venv/bin/python}
HOLDOUT=${HOLDOUT:-$(cat scripts/repair_holdout_scenes.txt)}
[ "$HOLDOUT" = none ] && HOLDOUT=
DATASETS=("degraded:outputs/degraded@${CORPUS_WEIGHT:-3}" "scenes:outputs/train-scenes@1")
if compgen -G "outputs/degraded-arcs/fits/*/*/fit.json" > /dev/null; then   # a finished arc fit
  DATASETS+=("degraded:outputs/degraded-arcs@${ARC_WEIGHT:-3}")
fi
OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior repair --datasets "${DATASETS[@]}" \
  --output-dir "$RUN" --steps "${STEPS:-20000}" --batch-size "${BATCH:-8}" --max-minutes "${MINUTES:-0}" \
  --checkpoint-every 100 --keep-checkpoints 2 --image-every 250 --log-every 25 --learning-rate "${LR:-1e-4}" --validate-every "${VALIDATE_EVERY:-100}" \
  ${HOLDOUT:+--holdout-scenes $HOLDOUT} $([ "${RECOLOUR:-1}" = 0 ] && echo --no-recolour) ${INIT:+--init-from "$INIT" --resolution 128}
if [ -f "$RUN/prior/reconfusion_prior.json" ]; then echo "prior written to $RUN/prior"; else echo "stopped before the end: rerun the same command to resume"; fi
