"""`make bench`: throughput, latency, sweeper and cold-start figures measured on the emulators.

Not tests: nothing here asserts on time. `python -m bench.run` measures every figure in one run
and writes `docs/BENCHMARKS.md` and `docs/bench.png`; see `bench/run.py`.
"""
