"""Target-side programs (the top-level `export/`): copied to a device and run there with python3 + numpy
plus tensorrt or onnxruntime. They import nothing from edgecomp (this file
only makes them importable by tests and the host). Each prints one JSON
object on stdout: info.py (device facts), build.py (TensorRT engine),
bench.py (latency, throughput, power), eval.py (top-1 accuracy)."""
