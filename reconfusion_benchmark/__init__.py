"""``reconfusion benchmark`` and ``reconfusion demo``: fit, evaluate and report, on top of the core library.

Layers, each importing only those below it: :mod:`~reconfusion_benchmark.runs` (config, runs, results),
:mod:`~reconfusion_benchmark.runner` (one fit: ns-train + ns-eval subprocesses, scene copies) and
:mod:`~reconfusion_benchmark.figures` / :mod:`~reconfusion_benchmark.report` (tables, plots, grids), then
:mod:`~reconfusion_benchmark.sweep` (all runs, resumable) and :mod:`~reconfusion_benchmark.demo`.
"""
