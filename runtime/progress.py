"""Progress of long work on stderr from its first second: a line as each stage starts, with the elapsed time
(progress bars alone say nothing where stderr is not a terminal: logs, CI, pipes)."""
from __future__ import annotations

import sys
import time


class Stages:
    """``stage("what now")`` prints ``[  12.3 s] LABEL: what now`` on stderr, when enabled."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled, self.start = label, enabled, time.perf_counter()

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:7.1f} s] {self.label}: {text}", file=sys.stderr, flush=True)


def quiet(text: str) -> None:
    """A stage reporter that reports nothing."""
