"""The ``executorch`` target: a ``.pte`` for phone CPUs (XNNPACK), checked by ExecuTorch's own runtime."""
