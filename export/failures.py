"""Why a network cannot be exported, in one line: the operator or the Python construct, and where it is in the
network's own source (file:line and the code), from what torch.export, the ONNX exporter or coremltools raise."""
from __future__ import annotations

import re
from typing import Callable

FRAME = re.compile(r'File "([^"]+)", line (\d+), in \w+\n\s*(.+)')
ONNX_OP = re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'")
COREML_OP = re.compile(r"convert function for op '(\w+)' not implemented")
LIBRARY_PARTS = ("site-packages", "dist-packages", "/torch/", "/lib/python")


def user_frame(text: str) -> str | None:
    """The innermost ``file:line `code``` of ``text``'s stack frames that is not in an installed library."""
    frames = [m for m in FRAME.finditer(text or "") if not any(p in m.group(1) for p in LIBRARY_PARTS)]
    if not frames:
        return None
    path, line, code = frames[-1].groups()
    return f"{path}:{line} `{code.strip()}`"


def _summary(exc: Exception) -> str:
    text = str(exc)
    summary = text.split("## Exception summary", 1)[-1].strip().splitlines()
    line = next((s for s in summary if s.strip()), type(exc).__name__)
    return re.sub(r"\x1b\[[0-9;]*m|<class '[\w.]+\.(\w+)'>", lambda m: m.group(1) or "", line)[:200]


def onnx_failure(name: str, exc: Exception, locate: Callable[[str], str | None]) -> str:
    """The one line for a failed ``torch.onnx.export``; ``locate(op)``: where that op is in the network's source."""
    text = str(exc)
    op = ONNX_OP.search(text)
    if op:
        where = locate(op.group(1).split(".")[-1])
        return (f"ONNX export of {name} failed: ONNX has no conversion of the operator {op.group(1)}"
                f"{f' (at {where})' if where else ''}: replace it with operators ONNX has; nothing written")
    where = user_frame(text)
    if "data-dependent" in text or "GuardOnDataDependent" in text:
        return (f"ONNX export of {name} failed: Python control flow on a tensor's value"
                f"{f' at {where}' if where else ''} cannot be traced for every input: use torch.where, or decide on "
                "shapes or arguments instead; nothing written")
    return (f"ONNX export of {name} failed ({_summary(exc)}){f' at {where}' if where else ''}: nothing written")


def coreml_failure(name: str, exc: Exception) -> str:
    """The one line for a failed Core ML conversion."""
    op = COREML_OP.search(str(exc))
    if op:
        return (f"Core ML export of {name} failed: coremltools has no conversion of the operator {op.group(1)}: "
                "replace it with operators Core ML has; nothing written")
    return f"Core ML export of {name} failed ({type(exc).__name__}: {str(exc).strip()[:200]}): nothing written"


def traced_branch(name: str, message: str, filename: str, lineno: int) -> str:
    """The one line for a ``torch.jit.trace`` warning that a tensor's value decided Python control flow."""
    return (f"Core ML export of {name} failed: Python control flow on a tensor's value at {filename}:{lineno} would be "
            f"frozen by tracing ({message.split('.')[0]}): use torch.where; nothing written")
