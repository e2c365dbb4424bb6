"""Progress of long work on stderr from its first second: a line as each stage starts, with the elapsed time
(progress bars alone say nothing where stderr is not a terminal: logs, CI, pipes)."""
from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import Iterator


class Stages:
    """``stage("what now")`` prints ``[  12.3 s] LABEL: what now`` on stderr, when enabled."""

    def __init__(self, label: str, enabled: bool = True):
        self.label, self.enabled, self.start = label, enabled, time.perf_counter()

    def __call__(self, text: str) -> None:
        if self.enabled:
            print(f"[{time.perf_counter() - self.start:7.1f} s] {self.label}: {text}", file=sys.stderr, flush=True)


def quiet(text: str) -> None:
    """A stage reporter that reports nothing."""


@contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """File descriptor 2 to /dev/null for the duration: what native libraries print there as they start (ncnn's
    Vulkan devices, ExecuTorch's CPU probing), beside Python's sys.stderr, is not the user's concern."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
