cd "$(dirname "$0")/../../../.."   # the repository root
for v in today all-but-near-far-annealing; do
  ARGS=$(.venv/bin/python -c "import sys; sys.path.insert(0, 'benchmarks'); from regulariser_ablation import VARIANTS; print(VARIANTS['$v'])")
  .venv/bin/reconfusion benchmark --scenes outputs/bench-data/horns --views 3 --methods baseline --out outputs/seed-spread/$v \
    --preset cpu --iterations 600 --max-test-views 8 --jobs 2 --seeds 1 2 "--ns-train-args=$ARGS"
done
