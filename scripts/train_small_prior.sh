#!/usr/bin/env bash
# Trains the small prior (128 px, bundled TAEF2 autoencoder) on real training material and procedural scenes.
# Never on an evaluation scene: the real material is ../shared/data/train only (see its README).
# Usage: bash scripts/train_small_prior.sh [RUN_DIR]   (rerun the same command to resume from the last checkpoint)
# Environment: TRAIN (the shared train/ folder), STEPS, MINUTES (0 = no limit), BATCH, THREADS.
set -euo pipefail
RUN=${1:-runs/small-prior}
TRAIN=${TRAIN:-../shared/data/train}
PY=${PYTHON:-python}
M=$TRAIN/meshes
[ -d "$RUN/data/meshes" ] || $PY -m reconfusion data render-meshes "$M/Avocado/Avocado.gltf" "$M/WaterBottle/WaterBottle.gltf" \
  "$M/Suzanne/Suzanne.gltf" "$M/CesiumMilkTruck/CesiumMilkTruck.gltf" "$M/CesiumMan/CesiumMan.gltf" "$M/cow/cow.obj" \
  "$M/fuze/fuze.obj" "$M/capsule/capsule.obj" "$RUN/data/meshes" --views 48 --resolution 128 --supersample 2
# Procedural seeds as the tiny prior's (100000+ object-360, 200000+ forward-facing); held-out scenes use 900000+.
[ -d "$RUN/data/object" ] || $PY -m reconfusion data synthetic "$RUN/data/object" --scenes 24 --views 24 --resolution 128 --layout object-360 --seed 100000
[ -d "$RUN/data/forward" ] || $PY -m reconfusion data synthetic "$RUN/data/forward" --scenes 24 --views 24 --resolution 128 --layout forward-facing --seed 200000
OMP_NUM_THREADS=${THREADS:-1} $PY -m train_prior small \
  --datasets "llff:$TRAIN/photos/maryRose@0.5" "strecha:$TRAIN/photos/strecha@1" "scenes:$RUN/data/meshes@1" \
             "scenes:$RUN/data/object@1" "scenes:$RUN/data/forward@1" \
  --output-dir "$RUN/prior" --steps "${STEPS:-20000}" --batch-size "${BATCH:-8}" --warmup-steps 200 \
  --max-minutes "${MINUTES:-0}" --checkpoint-every 200 --keep-checkpoints 2 --image-every 500 --log-every 25
if [ -f "$RUN/prior/prior/reconfusion_prior.json" ]; then echo "prior written to $RUN/prior/prior"; else echo "stopped before the end: rerun the same command to resume"; fi
