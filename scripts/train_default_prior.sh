#!/usr/bin/env bash
# Reproduces the bundled default prior (reconfusion/assets/default_prior):
#   procedural training scenes of both layouts, a held-out set, the tiny VAE stage, the tiny prior stage.
# Usage: bash scripts/train_default_prior.sh [RUN_DIR]
# Environment: SCENES (per layout, default 600), VAE_STEPS, PRIOR_STEPS, PRIOR_MINUTES (0 = no time limit),
# BATCH, WORKERS, JOBS (parallel scene generators). The model card records the steps actually reached;
# rerunning with PRIOR_STEPS set to that number and PRIOR_MINUTES=0 reproduces it.
set -euo pipefail
RUN=${1:-runs/default-prior}
SCENES=${SCENES:-600}
JOBS=${JOBS:-$(nproc)}
SHARD=$(( (SCENES + JOBS - 1) / JOBS ))
PY=${PYTHON:-python}

generate() {  # layout seed-base folder
  seq 0 $((JOBS - 1)) | xargs -P "$JOBS" -I{} sh -c \
    "$PY -m reconfusion data synthetic $3/shard_{} --scenes $SHARD --views 24 --resolution 64 --layout $1 --seed \$(( $2 + {} * $SHARD )) > /dev/null"
}
[ -d "$RUN/data/object" ] || generate object-360 100000 "$RUN/data/object"
[ -d "$RUN/data/forward" ] || generate forward-facing 200000 "$RUN/data/forward"
# Held-out scenes (seeds 900000+) are what the benchmark evaluates on; the prior never trains on them.
[ -d "$RUN/heldout/object" ] || $PY -m reconfusion data synthetic "$RUN/heldout/object" --scenes 8 --views 24 --layout object-360 --seed 900000 > /dev/null
[ -d "$RUN/heldout/forward" ] || $PY -m reconfusion data synthetic "$RUN/heldout/forward" --scenes 8 --views 24 --layout forward-facing --seed 900100 > /dev/null

$PY -m train_prior tiny-vae --data "$RUN/data/object" "$RUN/data/forward" --output-dir "$RUN/vae" \
  --steps "${VAE_STEPS:-3000}" --batch-size "${VAE_BATCH:-16}" --num-workers "${WORKERS:-0}" \
  --max-minutes "${VAE_MINUTES:-0}" --image-every 500
$PY -m train_prior tiny --data "$RUN/data/object" "$RUN/data/forward" --vae "$RUN/vae/vae" \
  --eval-data "$RUN/heldout/object" "$RUN/heldout/forward" --output-dir "$RUN/prior" \
  --steps "${PRIOR_STEPS:-20000}" --batch-size "${BATCH:-16}" --num-workers "${WORKERS:-0}" \
  --max-minutes "${PRIOR_MINUTES:-0}" --checkpoint-every 1000 --image-every 1000
echo "prior written to $RUN/prior/prior"
