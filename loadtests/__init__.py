"""Load tests: canned nginx upstream, bare pass-through floors, the side-by-side benchmark, locust users.

Run the benchmark with `python -m loadtests.bench`; see docs/benchmarks.md.
"""

__all__: list[str] = []
