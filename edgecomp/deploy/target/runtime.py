"""Shared by the target-side programs: JSON output, inference backends, CUDA memory.

These files run on the device with what JetPack ships (python3, numpy,
tensorrt) or with onnxruntime; they import nothing from edgecomp and nothing
outside the standard library but numpy, onnxruntime, tensorrt and (when
installed) cuda-python. edgecomp copies this whole folder to the device.

Every program prints exactly ONE JSON object on stdout. Anything a library
prints on stdout is moved to stderr (the log), and a failure prints
{"error": "<one line>"} and exits 1.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

FORMAT = "edgecomp-target/1"


# ---------------------------------------------------------------- output


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 600 else text[:597] + "..."


def describe(error: BaseException) -> str:
    """Our own RuntimeErrors speak for themselves; anything else is named by its type."""
    if type(error) in (RuntimeError, CudaError):
        return one_line(error)
    return f"{type(error).__name__}: {one_line(error)}"


TRTEXEC_PRECISION = {"fp32": [], "fp16": ["--fp16"], "int8": ["--int8", "--fp16"]}  # trtexec's flags per precision


def add_timing_args(parser: argparse.ArgumentParser, iterations: int) -> None:
    """The timing options of compare.py: the runtime, its settings and the input."""
    parser.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default="cpu", help="onnxruntime EP")
    parser.add_argument("--precision", choices=["fp32", "fp16", "int8"], default="fp32", help="trtexec only")
    parser.add_argument("--iterations", type=int, default=iterations)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--shape", action="append", default=[], help="trtexec: NAME:BxCxHxW (repeatable)")


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as JSON, like every other failure."""

    def error(self, message: str) -> None:  # type: ignore[override]
        _emit_error(f"{self.prog}: {message}", code=2)


_json_out = None


def _claim_stdout():
    """Keep the real stdout for our one JSON object; send library chatter to stderr."""
    global _json_out
    if _json_out is None:
        sys.stdout.flush()
        _json_out = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    return _json_out


def _emit(payload: dict[str, Any]) -> None:
    out = _claim_stdout()
    out.write(json.dumps(payload, default=_plain) + "\n")
    out.flush()


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _emit_error(message: str, code: int = 1) -> None:
    _emit({"error": message})
    sys.exit(code)


def main(program: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], dict]) -> None:
    _claim_stdout()
    args = parser.parse_args()
    try:
        result = run(args)
    except Exception as exc:  # noqa: BLE001 - the host needs one line whatever broke
        _emit_error(describe(exc))
    _emit({"program": program, "format": FORMAT, **result})


# ---------------------------------------------------------------- statistics


def latency_summary(seconds: list[float], batch: int) -> dict[str, Any]:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    mean = float(ms.mean())
    stats = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}
    stats.update(mean=mean, min=float(ms.min()), max=float(ms.max()), std=float(ms.std()))
    return {"latency_ms": stats, "throughput_fps": batch * 1000.0 / mean if mean > 0 else None}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ---------------------------------------------------------------- shapes


def resolve_shape(name: str, dims: list[Any], batch: int) -> tuple[int, ...]:
    """Fill the dynamic batch dimension; any other dynamic dimension is an error."""
    shape = []
    for index, dim in enumerate(dims):
        dynamic = dim is None or isinstance(dim, str) or (isinstance(dim, int) and dim < 0)
        if dynamic and index == 0:
            shape.append(batch)
        elif dynamic:
            raise RuntimeError(f"input {name!r} has a dynamic dimension {index} besides the batch: export it fixed")
        else:
            shape.append(int(dim))
    if shape and shape[0] != batch:
        raise RuntimeError(f"input {name!r} has a fixed batch of {shape[0]}, not {batch}: use --batch {shape[0]}")
    return tuple(shape)


def random_inputs(inputs: list[tuple[str, tuple[int, ...], np.dtype]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for name, shape, dtype in inputs:
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[name] = np.zeros(shape, dtype=dtype)
    return feeds


def time_inference(infer: Callable[[], Any], iterations: int, warmup: int) -> list[float]:
    """Warm up, then time each call with perf_counter; `infer` returns only when the device is done."""
    for _ in range(warmup):
        infer()
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        infer()
        times.append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------- onnxruntime

ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def ort_providers(provider: str, cache_dir: str) -> list[Any]:
    if provider == "cpu":
        return ["CPUExecutionProvider"]
    if provider == "cuda":
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if provider == "tensorrt":
        options = {"trt_fp16_enable": True, "trt_engine_cache_enable": True, "trt_engine_cache_path": cache_dir}
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider", "CPUExecutionProvider"]
    raise RuntimeError(f"unknown onnxruntime provider {provider!r} (cpu, cuda, tensorrt)")


class OrtBackend:
    """An onnxruntime session on the CPU, CUDA or TensorRT execution provider."""

    name = "onnxruntime"

    def __init__(self, model: str, batch: int, provider: str = "cpu", threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        providers = ort_providers(provider, os.path.dirname(os.path.abspath(model)))
        first = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if first not in ort.get_available_providers():
            raise RuntimeError(f"onnxruntime {ort.__version__} here has no {first} "
                               f"(available: {', '.join(ort.get_available_providers())})")
        self.session = ort.InferenceSession(model, options, providers=providers)
        self.provider = self.session.get_providers()[0]
        self.version = ort.__version__
        self.inputs = [(i.name, resolve_shape(i.name, list(i.shape), batch),
                        np.dtype(ORT_TYPES.get(i.type, np.float32))) for i in self.session.get_inputs()]

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def device_memory_mb(self) -> Optional[float]:
        return None

    def close(self) -> None:
        self.session = None


# ---------------------------------------------------------------- CUDA memory


class CudaError(RuntimeError):
    pass


class _CudaPython:
    """CUDA runtime through NVIDIA's cuda-python bindings."""

    via = "cuda-python"

    def __init__(self, cudart):
        self.rt = cudart
        self.H2D = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.D2H = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost

    def _call(self, what: str, result):
        err, rest = result[0], result[1:]
        if int(getattr(err, "value", err)) != 0:
            raise CudaError(f"{what} failed: {err}")
        return rest[0] if len(rest) == 1 else rest

    def malloc(self, nbytes: int) -> int:
        return int(self._call("cudaMalloc", self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        self._call("cudaFree", self.rt.cudaFree(ptr))

    def stream(self):
        return self._call("cudaStreamCreate", self.rt.cudaStreamCreate())

    def handle(self, stream) -> int:
        return int(stream)

    def to_device(self, ptr: int, array: np.ndarray, stream) -> None:
        self._call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, self.H2D, stream))

    def to_host(self, array: np.ndarray, ptr: int, stream) -> None:
        self._call("cudaMemcpyAsync", self.rt.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, self.D2H, stream))

    def synchronize(self, stream) -> None:
        self._call("cudaStreamSynchronize", self.rt.cudaStreamSynchronize(stream))

    def mem_info(self) -> tuple[int, int]:
        free, total = self._call("cudaMemGetInfo", self.rt.cudaMemGetInfo())
        return int(free), int(total)


CUDART_NAMES = ["libcudart.so", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so.10.2"]
CUDART_GLOBS = ["/usr/local/cuda/lib64/libcudart.so*", "/usr/local/cuda/targets/*/lib/libcudart.so*"]


class _CudaCtypes:
    """CUDA runtime through ctypes on libcudart (JetPack ships it; no pycuda needed)."""

    via = "ctypes"
    H2D, D2H = 1, 2  # cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost

    def __init__(self):
        self.lib = self._load()
        c = ctypes
        signatures = {
            "cudaMalloc": [c.POINTER(c.c_void_p), c.c_size_t], "cudaFree": [c.c_void_p],
            "cudaMemcpyAsync": [c.c_void_p, c.c_void_p, c.c_size_t, c.c_int, c.c_void_p],
            "cudaStreamCreate": [c.POINTER(c.c_void_p)], "cudaStreamSynchronize": [c.c_void_p],
            "cudaMemGetInfo": [c.POINTER(c.c_size_t), c.POINTER(c.c_size_t)], "cudaGetErrorString": [c.c_int],
        }
        for name, argtypes in signatures.items():
            getattr(self.lib, name).argtypes = argtypes
            getattr(self.lib, name).restype = c.c_int
        self.lib.cudaGetErrorString.restype = c.c_char_p

    @staticmethod
    def _load():
        candidates = CUDART_NAMES + sorted(p for pattern in CUDART_GLOBS for p in glob.glob(pattern))
        for name in candidates:
            try:
                return ctypes.CDLL(name)
            except OSError:
                continue
        raise CudaError("no CUDA runtime: neither cuda-python nor libcudart.so was found")

    def _check(self, what: str, code: int) -> None:
        if code != 0:
            raise CudaError(f"{what} failed: {self.lib.cudaGetErrorString(code).decode(errors='replace')}")

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check("cudaMalloc", self.lib.cudaMalloc(ctypes.byref(ptr), nbytes))
        return int(ptr.value or 0)

    def free(self, ptr: int) -> None:
        self._check("cudaFree", self.lib.cudaFree(ptr))

    def stream(self):
        stream = ctypes.c_void_p()
        self._check("cudaStreamCreate", self.lib.cudaStreamCreate(ctypes.byref(stream)))
        return stream

    def handle(self, stream) -> int:
        return int(stream.value or 0)

    def to_device(self, ptr: int, array: np.ndarray, stream) -> None:
        self._check("cudaMemcpyAsync", self.lib.cudaMemcpyAsync(ptr, array.ctypes.data, array.nbytes, self.H2D, stream))

    def to_host(self, array: np.ndarray, ptr: int, stream) -> None:
        self._check("cudaMemcpyAsync", self.lib.cudaMemcpyAsync(array.ctypes.data, ptr, array.nbytes, self.D2H, stream))

    def synchronize(self, stream) -> None:
        self._check("cudaStreamSynchronize", self.lib.cudaStreamSynchronize(stream))

    def mem_info(self) -> tuple[int, int]:
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        self._check("cudaMemGetInfo", self.lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)))
        return free.value, total.value


def cuda_runtime():
    """cuda-python when installed (both of its module layouts), else ctypes on libcudart."""
    for module in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return _CudaPython(__import__(module, fromlist=["_"]))
        except ImportError:
            continue
    return _CudaCtypes()


# ---------------------------------------------------------------- TensorRT


class TrtBackend:
    """A deserialized TensorRT engine run with named tensors (TensorRT 8.5+ and 10.x)."""

    name = "tensorrt"
    buffers: dict[str, tuple[np.ndarray, int]]  # tensor name -> (host array, device pointer), set by _bind_all

    def __init__(self, engine_path: str, batch: int):
        import tensorrt as trt

        self.trt, self.version = trt, trt.__version__
        logger = trt.Logger(trt.Logger.WARNING)
        with open(engine_path, "rb") as handle:
            engine = trt.Runtime(logger).deserialize_cuda_engine(handle.read())
        if engine is None:
            raise RuntimeError(f"TensorRT {trt.__version__} cannot deserialize {os.path.basename(engine_path)}: "
                               "engines only run on the GPU and TensorRT version that built them; rebuild it here")
        if not hasattr(engine, "num_io_tensors"):
            raise RuntimeError(f"TensorRT {trt.__version__} lacks the named-tensor API (8.5+): use --backend trtexec")
        self.engine, self.context = engine, engine.create_execution_context()
        self.cuda = cuda_runtime()
        self.provider = f"tensorrt (cuda via {self.cuda.via})"
        self.stream = self.cuda.stream()
        free_before = self.cuda.mem_info()[0]
        self._bind_all(batch)
        self._allocated = max(0, free_before - self.cuda.mem_info()[0])

    def _bind_all(self, batch: int) -> None:
        trt, engine = self.trt, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs, self.output_names, self.buffers = [], [n for n in names if not is_input[n]], {}
        for name in (n for n in names if is_input[n]):
            shape = resolve_shape(name, list(engine.get_tensor_shape(name)), batch)
            self.context.set_input_shape(name, shape)
            self.inputs.append((name, shape, self._dtype(name)))
            self._bind(name, shape)
        for name in self.output_names:  # their shapes are known once every input shape is set
            self._bind(name, tuple(self.context.get_tensor_shape(name)))

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name)))

    def _bind(self, name: str, shape: tuple[int, ...]) -> None:
        host = np.empty(shape, dtype=self._dtype(name))
        ptr = self.cuda.malloc(max(host.nbytes, 1))
        self.context.set_tensor_address(name, ptr)
        self.buffers[name] = (host, ptr)

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        staged = []
        for name, _, dtype in self.inputs:
            array = np.ascontiguousarray(feeds[name], dtype=dtype)
            staged.append(array)  # alive until the stream is synchronised
            self.cuda.to_device(self.buffers[name][1], array, self.stream)
        if not self.context.execute_async_v3(self.cuda.handle(self.stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the log)")
        for name in self.output_names:
            host, ptr = self.buffers[name]
            self.cuda.to_host(host, ptr, self.stream)
        self.cuda.synchronize(self.stream)
        return [self.buffers[name][0].copy() for name in self.output_names]

    def device_memory_mb(self) -> Optional[float]:
        """Device memory taken by the engine's buffers (unified memory on Jetson)."""
        return self._allocated / 2**20

    def close(self) -> None:
        for _, ptr in self.buffers.values():
            self.cuda.free(ptr)
        self.buffers = {}


def open_backend(backend: str, model: str, batch: int, provider: str = "cpu", threads: int = 0):
    if backend == "onnxruntime":
        return OrtBackend(model, batch, provider, threads)
    if backend == "tensorrt":
        return TrtBackend(model, batch)
    raise RuntimeError(f"unknown backend {backend!r} (onnxruntime, tensorrt)")


def default_backend(model: str) -> str:
    return "tensorrt" if model.endswith((".engine", ".plan", ".trt")) else "onnxruntime"
