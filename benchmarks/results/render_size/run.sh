#!/usr/bin/env bash
# The CPU preset's render_size (64 px novel-view renderings for a 128 px prior) against the prior's resolution:
# CPU seconds per step on scan24 (step_timing.md) and the sample loss's gain with the repairing prior at 3 views,
# 600 iterations, 128 px (quality.md; the 128 px runs are the weight study's at 0.3, the baseline its runs at 3e-4,
# which never differ from the baseline's: benchmarks/results/sample_loss_weight_repair/run.sh).
# Finished fits are skipped: `mkdir -p outputs/b29 && cp -r benchmarks/results/sample_loss_weight_repair/runs/* \
# benchmarks/results/render_size/runs/* outputs/b29/` lets a rerun resume.
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=.venv/bin/python
$PY -m reconfusion benchmark --scenes outputs/bench-data/scan24 outputs/bench-data/scan37 --views 3 --preset cpu \
  --iterations 600 --max-side 128 --max-test-views 8 --prior outputs/repair-prior-pixel/prior --jobs 2 \
  --methods reconfusion --out outputs/b29/render64
$PY benchmarks/compare_variants.py --baseline outputs/b29/w3e-4 --variant "render 128 px=outputs/b29/w3e-1" \
  --variant "render 64 px (CPU preset)=outputs/b29/render64" --output benchmarks/results/render_size/quality.md
$PY benchmarks/bench_plugin.py --step-timing --iterations 100 --scene outputs/b29/render64/scenes/scan24 \
  --prior outputs/repair-prior-pixel/prior --render-size 128 64 --output benchmarks/results/render_size/step_timing.md
