"""srdeploy's ncnn INT8 writer (``export.ncnn.ncnn_int8``) against ncnn's own ``ncnn2int8`` (issue 37: a script, not
CI; ``ncnn2int8`` is not in the pip packages and is built from ncnn's source in minutes).

    python -m srdeploy.benchmarks.ncnn_int8_layout_check --ncnn2int8 PATH [--out benchmarks/results]

For FSRCNN ×2 and LESRCNN ×2: the gated INT8 ONNX graph's float twin is converted by pnnx (FP32), then made INT8
twice: by srdeploy's writer, and by ``ncnn2int8`` from a calibration table holding the scales srdeploy wrote
(``LAYER`` the input's scale, ``LAYER_param_0`` the weight scales, ``%.9g``: exact for float32). The same layers
must carry the same ``int8_scale_term`` in the two ``.param``s (whose text differs: ncnn's writer leaves out
default values), and each INT8 layer's bytes in the two ``.bin``s (int8 weights, bias, scales) must be equal.
The float layers differ by design: ``ncnn2int8`` stores them in FP16, srdeploy keeps the search's float layers
FP32. Writes ``ncnn_int8_layout_check_<machine>.{md,json}``.
"""
from __future__ import annotations

import argparse
import struct
import subprocess
import tempfile
from pathlib import Path

from .bench import cpu_text, report_header, write_results
from ..export.ncnn.ncnn_export import blobs, convert
from ..export.ncnn.ncnn_int8 import float_twin, quantize_graph, weight_spans
from ..export.ncnn.ncnn_param import read_param
from ..export.onnx.target import gated_onnx
from ..export.options import ExportOptions, Progress
from ..models.spec import ModelSpec
from ..runtime.tables import markdown_table

MODELS = (("fsrcnn", 2), ("lesrcnn", 2))


def int8_layers(param: str) -> dict[str, str]:
    """INT8 convolutions of an ncnn ``.param``: name → ``int8_scale_term``."""
    return {l.name: l.params["8"] for l in read_param(param)
            if l.kind == "Convolution" and l.params.get("8", "0") != "0"}


def table(param: bytes, weights: bytes) -> str:
    """ncnn2int8's calibration table for the INT8 convolutions of srdeploy's ``param``/``weights``."""
    layers = read_param(param.decode())
    spans = weight_spans(layers, weights)
    lines = []
    for name, term in int8_layers(param.decode()).items():
        last = 3 if int(term) > 100 else 2  # … weight scales, input scale[, output scale]
        (w_at, w_len), (i_at, _) = spans[name][-last], spans[name][-last + 1]
        weight_scales = struct.unpack_from(f"<{w_len // 4}f", weights, w_at)
        input_scale = struct.unpack_from("<f", weights, i_at)[0]
        lines += [f"{name}_param_0 " + " ".join(f"{v:.9g}" for v in weight_scales), f"{name} {input_scale:.9g}"]
    return "\n".join(lines) + "\n"


def layer_bytes(param: str, weights: bytes, names) -> dict[str, bytes]:
    spans = weight_spans(read_param(param), weights)
    return {name: b"".join(weights[at:at + length] for at, length in spans[name]) for name in names}


def check(model: str, scale: int, tool: Path, work: Path) -> dict:
    net = ModelSpec(model, scale).load()
    proto, _ = gated_onnx(net, "int8", ExportOptions(precision="int8"), Progress(False), summary=False)
    twin = float_twin(proto)
    channels = twin.graph.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    param, weights = convert(twin.graph, [[1, channels, 32, 32], [1, channels, 48, 40]], False, work)
    source, _ = blobs(param.decode())
    ours_param, ours, count = quantize_graph(twin.graph, twin.convs, param, weights, source)
    files = {name: work / name for name in ("fp32.param", "fp32.bin", "int8.param", "int8.bin", "table.txt")}
    files["fp32.param"].write_bytes(param)
    files["fp32.bin"].write_bytes(weights)
    files["table.txt"].write_text(table(ours_param, ours))
    done = subprocess.run([str(tool), *(str(files[n]) for n in ("fp32.param", "fp32.bin", "int8.param", "int8.bin",
                                                                "table.txt"))], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0 or not files["int8.bin"].is_file():
        raise SystemExit(f"ncnn2int8 failed: {(done.stderr + done.stdout).strip()[-300:]}")
    theirs_param = files["int8.param"].read_text()
    ours_terms, theirs_terms = int8_layers(ours_param.decode()), int8_layers(theirs_param)
    mine = layer_bytes(ours_param.decode(), ours, ours_terms)
    their = layer_bytes(theirs_param, files["int8.bin"].read_bytes(), ours_terms) if ours_terms == theirs_terms else {}
    equal = [name for name in mine if their.get(name) == mine[name]]
    return {"model": f"{model} ×{scale}", "int8_convolutions": count, "same_int8_terms": ours_terms == theirs_terms,
            "terms": sorted(set(ours_terms.values())), "layers_byte_equal": len(equal),
            "int8_bytes": sum(len(b) for b in mine.values())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ncnn2int8", required=True, type=Path, help="ncnn's ncnn2int8, built from source")
    parser.add_argument("--out", default="benchmarks/results", help="folder for the .md and .json")
    args = parser.parse_args(argv)
    report = report_header("python -m srdeploy.benchmarks.ncnn_int8_layout_check", "fsrcnn, lesrcnn", 2, None)
    rows = []
    for model, scale in MODELS:
        with tempfile.TemporaryDirectory() as work:
            rows.append(check(model, scale, args.ncnn2int8, Path(work)))
        print(rows[-1], flush=True)
    report["results"] = rows
    text = (f"`{report['command']}` — {report['date']}\n\nMachine: {cpu_text(report['machine'])}; "
            f"ncnn2int8: `{args.ncnn2int8}`.\n\n" + markdown_table(
                ["model", "INT8 convolutions", "same layers, same int8_scale_term", "INT8 layers byte-equal",
                 "INT8 layers' bytes"],
                [[r["model"], str(r["int8_convolutions"]), "yes" if r["same_int8_terms"] else "no",
                  f"{r['layers_byte_equal']} of {r['int8_convolutions']}", str(r["int8_bytes"])] for r in rows]) + "\n")
    write_results(args.out, "ncnn_int8_layout_check", report, text)
    return 0 if all(r["same_int8_terms"] and r["layers_byte_equal"] == r["int8_convolutions"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
