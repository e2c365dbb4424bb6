"""docs/reliability.md's tables, both from the recorded runs: the fuzzing runs (``benchmarks/results/fuzz_runs.json``)
and the injected faults (``benchmarks/results/fault_runs.json``).

    python -m srdeploy.benchmarks.reliability_tables
"""
from __future__ import annotations

import sys

from . import faults, fuzz


def main() -> int:
    return fuzz.main(["--table"]) or faults.main(["--table"])


if __name__ == "__main__":
    sys.exit(main())
