"""Re-run the surviving mutants of a cosmic-ray session against today's tests, one at a time.

    python benchmarks/mutation/retest.py SESSION.sqlite "TEST COMMAND"

For tests added after ``cosmic-ray exec`` ran: each survivor is applied with ``cosmic-ray apply``, the test
command run, and the module restored with ``git checkout``. Prints one line per survivor, killed or survived.
"""
from __future__ import annotations

import sqlite3
import subprocess
import sys


def main(session: str, command: str) -> int:
    rows = sqlite3.connect(session).execute(
        "select s.module_path, s.operator_name, s.occurrence, s.start_pos_row, r.diff from work_results r "
        "join mutation_specs s on s.job_id = r.job_id where r.test_outcome = 'SURVIVED' order by s.start_pos_row"
    ).fetchall()
    survived = 0
    for module, operator, occurrence, row, diff in rows:
        change = " / ".join(line[1:].strip() for line in diff.splitlines()
                            if line[:1] in "+-" and not line.startswith(("---", "+++")))
        subprocess.run(["cosmic-ray", "apply", module, operator, str(occurrence)], check=True)
        try:
            killed = subprocess.run(command, shell=True, capture_output=True).returncode != 0
        finally:
            subprocess.run(["git", "checkout", "--", module], check=True)
        survived += not killed
        print(f"{'killed  ' if killed else 'SURVIVED'} line {row}: {operator}#{occurrence}: {change}", flush=True)
    print(f"{len(rows) - survived} of {len(rows)} survivors now killed")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
