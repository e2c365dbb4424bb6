"""Upscale images on the device with the Jetson bundle's own engines (or its ONNX files), torch-free:

    python3 -m runtime.bundle_upscale INPUT OUTPUT [--precision fp16] [--backend tensorrt|onnxruntime] [--tile 256]

INPUT is an image or a folder of images; OUTPUT an image file, or a folder for NAME_x{scale}.png. Large images
are tiled (with the network's receptive radius as context: the result equals a whole-image run) and kept within
the engine's optimization profile. Exit status: 0 every image written; 1 some failed (each named, the others
written); 2 nothing done.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .bundle_check import BUNDLE, BUNDLE_BACKENDS, load_manifest, open_session
from .errors import SrDeployError
from .images import DEFAULT_MAX_PIXELS
from .upscale import plan_jobs, report, tiler, tiling, upscale_each


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m runtime.bundle_upscale", description=__doc__.split("\n")[0])
    parser.add_argument("input", help="image file or folder")
    parser.add_argument("output", help="output image file, or folder (created) for NAME_x{scale}.png")
    parser.add_argument("--precision", help="fp32, fp16 or int8 (default: fp16 where the bundle has it)")
    parser.add_argument("--backend", choices=BUNDLE_BACKENDS, default="tensorrt",
                        help="tensorrt: the engine build.sh built (default); onnxruntime or openvino: the bundle's "
                             "ONNX on the CPU")
    parser.add_argument("--tile", type=int, help="LR tile size in pixels (0: whole image); default 256")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest input image in pixels, checked from the header (default {DEFAULT_MAX_PIXELS})")
    args = parser.parse_args(argv)
    try:
        if (args.tile or 0) < 0 or args.max_pixels < 1:
            raise SrDeployError("--tile must be ≥ 0 and --max-pixels ≥ 1")
        manifest = load_manifest()
        precisions = manifest["precisions"]
        precision = args.precision or ("fp16" if "fp16" in precisions else next(iter(precisions)))
        if precision not in precisions:
            raise SrDeployError(f"precision {precision} is not in this bundle ({', '.join(precisions)})")
        jobs = plan_jobs(Path(args.input), Path(args.output))
        session = open_session(BUNDLE, precisions[precision], args.backend, False, precision)
        tile, overlap = tiling(session.metadata["model"], args.tile, None, session.receptive_radius,
                               session.shape_bounds["max"], session.whole_image)
    except SrDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tiled = tiler(session.infer, session.scale, tile, overlap, session.shape_bounds["min"][2],
                  session.gate_split if session.has_global_gate else None)
    return report(upscale_each(jobs, tiled, session.colour, args.max_pixels), len(jobs))


if __name__ == "__main__":
    sys.exit(main())
