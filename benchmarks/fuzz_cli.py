"""The command line's fuzz harness (``benchmarks/fuzz.py cli``): argparse and the mapping of options onto the
library's calls. It imports the CLI it fuzzes, the one module of this layer above the CLI (tests/test_architecture.py
names it)."""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable


def cli_seeds(folder: Path) -> None:
    for i, argv in enumerate((["export", "--model", "fsrcnn", "--target", "web", "--precision", "int8"],
                              ["upscale", "in.png", "out.png", "--tile", "128", "--artifact", "a.onnx"],
                              ["bench", "--model", "lesrcnn", "--backends", "onnx,openvino", "--sizes", "256x256"],
                              ["parity", "a.onnx", "--golden", "g"], ["serve", "site", "--port", "8000"],
                              ["eval", "Set5", "--model", "fsrcnn", "--scale", "3"], ["models", "--json"])):
        (folder / f"argv{i}").write_bytes("\0".join(argv).encode())


def cli_harness() -> Callable[[bytes], None]:
    """The command line up to the library call: argparse (one line and exit 2 on a mistake) and the mapping of every
    option onto the call's parameters (``cli.arguments``), for NUL-separated arguments."""
    from .. import api, cli

    parser = cli.build_parser()
    calls = {"export": api.export_model, "upscale": api.upscale, "bench": api.bench, "parity": api.parity,
             "serve": api.serve, "eval": api.evaluate}  # models calls api.zoo() with no options

    def one_input(data: bytes) -> None:
        argv = data.decode("utf-8", "replace").split("\0")
        stderr = io.StringIO()
        try:
            with contextlib.redirect_stdout(stderr), contextlib.redirect_stderr(stderr):
                args = parser.parse_args(argv)
        except SystemExit as exc:
            lines = stderr.getvalue().strip().splitlines()
            assert exc.code in (0, 2) and (exc.code == 0 or len(lines) == 1), stderr.getvalue()
            return
        args.progress = False
        if args.command in calls:
            cli.arguments(calls[args.command], args)

    return one_input
