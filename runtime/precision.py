"""The numeric precision of an artifact: what it computes in, and so the tolerance its parity is judged at."""
from __future__ import annotations

from enum import Enum

from .errors import SrDeployError


class Precision(str, Enum):
    """``fp32``, ``fp16``, ``int8`` (TensorRT-legal Q/DQ) or ``bf16`` (an FP32 graph that its runtime computes in
    bfloat16: OpenVINO on CPUs with AVX-512 BF16 or AMX); equal to its string, so metadata and JSON keep it."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    BF16 = "bf16"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def parse(cls, value: str) -> Precision:
        """``value`` as a Precision, or the one-line error naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise SrDeployError(f"precision {value!r} is not available: choose one of "
                                f"{', '.join(p.value for p in cls)}") from None
