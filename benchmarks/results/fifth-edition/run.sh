#!/usr/bin/env bash
# BENCHMARKS.md, fifth edition (the scenes imported and split as the commands at the top of BENCHMARKS.md say): the photographed evaluation scenes and lego, baseline against reconfusion with the
# repairing prior (docs/repair_prior/model_card_pixel_loss.md; its sample-loss weight by default 0.3:
# benchmarks/results/sample_loss_weight_repair), at 3/6/9 views, a second seed at 3 views, the three sample-loss modes
# and scene adaptation (reconfusion-adapted) at 3 views. 600 iterations at 128 px on 2 CPU cores (the protocols'
# resolutions cost 10-16x more per fit).
# Finished fits are skipped, so a rerun resumes; on a fresh
# machine `mkdir -p outputs/benchmark6 && cp -r benchmarks/results/fifth-edition/runs outputs/benchmark6/` first, and
# put the prior in place: `mkdir -p outputs/repair-prior-pixel && cp -r checkpoints/repair-prior-pixel outputs/repair-prior-pixel/prior`.
# Usage: bash benchmarks/results/fifth-edition/run.sh [report]   (report: only write the report from what finished;
# REPORT=path writes it there instead of BENCHMARKS.md, and leaves the README's headline table alone)
set -euo pipefail
cd "$(dirname "$0")/../../.."
RC=${RC:-.venv/bin/reconfusion}
PRIOR=${PRIOR:-outputs/repair-prior-pixel/prior}
OUT=outputs/benchmark6
SCENES=(outputs/bench-data/{fern,horns,trex,juicebox,scan24,scan37,lego})
COMMON=(--preset cpu --iterations 600 --max-side 128 --max-test-views 25 --jobs 2 --prior "$PRIOR" --out "$OUT")
if [ "${1:-}" != report ]; then
  $RC benchmark --scenes "${SCENES[@]}" --views 3 --methods baseline reconfusion "${COMMON[@]}"
  $RC benchmark --scenes "${SCENES[@]}" --views 6 9 --methods baseline reconfusion "${COMMON[@]}"
  $RC benchmark --scenes "${SCENES[@]}" --views 3 --methods baseline reconfusion --seeds 43 "${COMMON[@]}"
  $RC benchmark --scenes "${SCENES[@]:0:6}" --views 3 --methods sds multistep "${COMMON[@]}"
  $RC benchmark --scenes "${SCENES[@]}" --views 3 --methods reconfusion-adapted "${COMMON[@]}"
  # the second seed where its baselines were fitted on the same machine as the adapted fits (juicebox, DTU, lego)
  $RC benchmark --scenes "${SCENES[@]:3:4}" --views 3 --methods reconfusion-adapted --seeds 43 "${COMMON[@]}"
fi
mkdir -p benchmarks/results/fifth-edition/runs
(cd "$OUT/runs" && find . -name result.json -exec cp --parents {} ../../../benchmarks/results/fifth-edition/runs/ \;)
$RC benchmark --scenes "${SCENES[@]}" --views 3 6 9 --methods baseline reconfusion reconfusion-adapted sds multistep --seeds 42 43 --out "$OUT" \
  --preset cpu --iterations 600 --max-side 128 --max-test-views 25 --prior "$PRIOR" \
  --merge --merge-from benchmarks/results/fifth-edition --report "${REPORT:-BENCHMARKS.md}" \
  --figures benchmarks/figures/fifth-edition $([ -z "${REPORT:-}" ] && echo --readme README.md) --title "reconfusion-benchmarks, fifth edition: the repairing prior ($PRIOR, sample-loss weight 0.3, novel views rendered at 64 px on a CPU) on the photographed scenes and lego, with a second seed, the three sample-loss modes and scene adaptation at 3 views"
