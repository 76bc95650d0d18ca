# Object scenes (lego, DTU scan24/scan37): a second seed at 3 views, then 6 and 9 views, for today's settings and
# every regulariser but near/far annealing - the evidence for the regularisers' default on object scenes.
set -e
cd "$(dirname "$0")/../../../.."   # the repository root
SCENES="outputs/bench-data/lego outputs/bench-data/scan24 outputs/bench-data/scan37"
for v in today all-but-near-far-annealing; do
  ARGS=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); from regulariser_ablation import VARIANTS; print(VARIANTS['$v'])")
  .venv/bin/reconfusion benchmark --scenes $SCENES --views 3 --methods baseline --out outputs/seed-spread/$v \
    --preset cpu --iterations 600 --max-test-views 8 --jobs 2 --seeds 1 "--ns-train-args=$ARGS"
done
.venv/bin/python benchmarks/regulariser_ablation.py --scenes $SCENES --variants today all-but-near-far-annealing \
  --views 6 9 --iterations 600 --max-test-views 8 --out outputs/ablation --jobs 2
