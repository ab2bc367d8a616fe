"""The deployment wing: from a run's model to engines measured on a device.

    export.py     ONNX (verified), Q/DQ INT8 ONNX, the format table        (never imports bench or runners)
    engines.py    the engine store: engines/<key>.engine + <key>.json
    builder.py    the one engine path: store hit, else target/build.py through a runner
    delivery.py   `edgecomp export` end to end (files, then the engine on the target)
    bench.py      timing and evaluation on a device (`edgecomp bench`)
    artifacts.py  what export wrote for bench (export.json's records), ONNX signature
    runners.py    HostRunner / SshRunner: where the target-side programs run
    devices/      device profiles (YAML) and --device strings
    target/       the target-side programs (stdlib, numpy, onnxruntime, tensorrt only)

Deployment stands on the ground (recipe, data, models, precision, errors,
console, rundir) and never imports the training loop or the pipeline.
"""
