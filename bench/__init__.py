"""The benchmark suite: ``robot-rl bench NAME [options]`` runs one (``robot-rl bench --list`` lists them).

One module per benchmark (``bench_<x>.py``, defining ``BENCHMARK``) on the shared harness (``bench/harness.py``):
the registry, common options, timing helpers and the results writer. Results are committed in ``bench/results/``.
"""
