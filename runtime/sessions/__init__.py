"""The runtimes that run exported artifacts, one module per target (ONNX Runtime, OpenVINO, TensorRT with its
CUDA layer and sidecar, Core ML); each session is an ``runtime.artifact.ArtifactSession`` with one ``infer()``,
opened through ``runtime.opener`` from the target table (``runtime.targets``)."""
