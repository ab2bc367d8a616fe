"""Top-1 accuracy of a model on this device; print one JSON object.

    python3 eval.py --model model.onnx|model.engine --data data.npz [--batch 1]
        [--backend onnxruntime|tensorrt] [--provider cpu|cuda|tensorrt]

data.npz holds `images` (float32 N×C×H×W, already preprocessed by the host)
and `labels` (int64 N). The last partial batch is padded and the padding's
predictions dropped, so fixed-batch engines work too.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the type checker reads the package import; the fallback below is the device's
    from . import runtime
else:
    try:
        from . import runtime
    except ImportError:
        import runtime


def load_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        if "images" not in data or "labels" not in data:
            raise RuntimeError(f"{os.path.basename(path)} needs arrays 'images' and 'labels'")
        images, labels = data["images"], data["labels"]
    if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels) or not len(labels):
        raise RuntimeError(f"bad data: images {images.shape} (N×C×H×W), labels {labels.shape} (N)")
    return images.astype(np.float32, copy=False), labels.astype(np.int64, copy=False)


def predict(backend, images: np.ndarray, batch: int) -> np.ndarray:
    name, shape, dtype = backend.inputs[0]
    if tuple(images.shape[1:]) != tuple(shape[1:]):
        raise RuntimeError(f"data images are {images.shape[1:]} per sample, the model takes {tuple(shape[1:])}")
    predictions = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        padded = np.zeros((batch, *chunk.shape[1:]), dtype=dtype)
        padded[: len(chunk)] = chunk
        logits = backend.infer({name: padded})[0]
        predictions.append(np.asarray(logits).reshape(batch, -1)[: len(chunk)].argmax(axis=1))
    return np.concatenate(predictions)


def run(args) -> dict[str, Any]:
    images, labels = load_data(args.data)
    backend_name = args.backend or runtime.default_backend(args.model)
    backend = runtime.open_backend(backend_name, args.model, args.batch, args.provider, args.threads)
    try:
        if len(backend.inputs) != 1:
            raise RuntimeError(f"eval takes models with one input, this one has {len(backend.inputs)}")
        start = time.perf_counter()
        correct = int((predict(backend, images, args.batch) == labels).sum())
        seconds = time.perf_counter() - start
    finally:
        backend.close()
    return {"backend": backend.name, "provider": backend.provider, "batch": args.batch,
            "samples": int(len(labels)), "correct": correct, "accuracy": correct / len(labels),
            "seconds": seconds}


def parser():
    p = runtime.Parser(prog="eval.py", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt"], default=None)
    p.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default="cpu")
    p.add_argument("--threads", type=int, default=0)
    return p


if __name__ == "__main__":
    runtime.main("eval", parser(), run)
