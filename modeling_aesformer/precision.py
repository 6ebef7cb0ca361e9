"""Which precision and which backend to score with: the choice behind every command's `--dtype` and `--backend`
(the flags themselves are the command line's, `aesformer_cli.precision`).

`auto` is decided by measurement, not by vendor strings: whether bf16 beats fp32, and whether an ONNX runtime beats
torch, depends on the host (an AMD Zen 4 runs bf16 dot products at twice the fp32 rate; an Intel VM that hides AMX
runs them no faster; a model at 64 px gains nothing from bf16 where one at 224 px gains 2x) and on the model's
shapes. So on first use a short probe (`measure_paths`: under a second with torch alone or a small model, 1-1.5 s
for Aesformer-T with both runtimes, most of it their graph compilation; once) times one transformer block of
each Swin stage and one fusion layer at the model's own shapes (channels, heads, window, fusion tokens; one image,
at most 98 tokens per block) on every candidate path: torch fp32, torch bf16, and the fp32 / bf16 paths of the
ONNX runtimes installed (`onnx_backend.installed_runtimes`). The fastest path wins, but only when it is measured at
least `MIN_GAIN` times faster than torch fp32 (so that noise never picks a slower path); torch fp32 otherwise. The
measurement is cached per CPU model, torch version, runtime versions and model shape in
`onnx_backend.user_cache_folder()/probe.json`, and the reason (with the measured ratio) is printed.

bf16 is only measured where the CPU computes it natively (AVX512-BF16 or AMX); elsewhere it is emulated and slower,
and `auto` keeps fp32 without measuring. Whatever the weights' precision, the score heads, the softmax, the
distribution, the EMD and the score stay in fp32 (see `AesformerPreTrainedModel._keep_in_fp32_modules_strict`).
"""

import json
import os
import platform
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from .onnx_backend import BACKEND_CHOICES as RUNTIME_BACKENDS
from .onnx_backend import installed_runtimes, user_cache_folder

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
# `aesformer score` also takes int8: the image-only branch quantized on ONNX Runtime (onnx_backend.int8_file_for);
# never chosen by `auto` (it changes the answers, within a bar checked on each run's first batch).
SCORING_DTYPE_CHOICES = DTYPE_CHOICES + ("int8",)
BACKEND_CHOICES = ("auto",) + RUNTIME_BACKENDS
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_GAIN = 1.10  # how much faster than torch fp32 another path must measure to be chosen
PROBE_VERSION = 1  # bump when the probe's workload changes (older cache entries are then ignored)
PROBE_FILE = "probe.json"
PROBE_TOKENS = 98  # at most this many tokens per probe block (whole windows): the GEMMs keep the model's widths


def _cpuinfo(cpuinfo_path: str) -> Tuple[str, set]:
    """(vendor id, flags) of the first CPU in /proc/cpuinfo; ("", set()) when unknown."""
    vendor, flags = "", set()
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("vendor_id") and not vendor:
                    vendor = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return vendor, flags


def cpu_model(cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """The CPU's model name (`lscpu`'s "Model name"), else the platform's processor string."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_computes_bf16(cpuinfo_path: str = "/proc/cpuinfo") -> Tuple[bool, str]:
    """(whether the CPU has bf16 matrix instructions, which): without them bf16 is emulated, and never faster."""
    _, flags = _cpuinfo(cpuinfo_path)
    found = [flag for flag in _CPU_BF16_FLAGS if flag in flags]
    if found:
        return True, f"the CPU has {' and '.join(found)}"
    return False, "the CPU has no AVX512-BF16 or AMX: bf16 would be emulated"


# ------------------------------------------------------------------------------------------------------- the probe
@dataclass(frozen=True)
class BlockShape:
    """One transformer block of the probe: `windows` x `tokens` tokens of width `channels`."""
    windows: int
    tokens: int
    channels: int
    heads: int
    mlp: int


def probe_shapes(config=None) -> List[BlockShape]:
    """One block per Swin stage (whole windows, at most `PROBE_TOKENS` tokens) and one fusion layer (the image-only
    branch's multi-scale tokens) at the shapes of `config` (an `AesformerConfig`; None: Aesformer-T's)."""
    if config is None:
        from .configuration_aesformer import AesformerConfig

        config = AesformerConfig.from_preset("aesformer-t")
    vision = config.vision_config
    size = vision.image_size if isinstance(vision.image_size, int) else vision.image_size[0]
    grid = size // vision.patch_size
    shapes = []
    for stage, heads in enumerate(vision.num_heads):
        side = max(1, grid // 2 ** stage)
        window = min(vision.window_size, side)
        channels = vision.embed_dim * 2 ** stage
        windows = max(1, min(PROBE_TOKENS // (window * window), (side // window) ** 2))
        shapes.append(BlockShape(windows, window * window, channels, heads, int(channels * vision.mlp_ratio)))
    last = max(1, grid // 2 ** (len(vision.num_heads) - 1))
    text = config.text_config
    shapes.append(BlockShape(1, min(PROBE_TOKENS // 2, len(vision.num_heads) * last * last), text.hidden_size,
                             text.num_attention_heads, text.intermediate_size))
    return shapes


def _block_weights(shape: BlockShape, seed: int):
    """The block's parameters: vectors as arrays, each matrix as the two factors `(a, b)` of the random rank-1
    matrix `outer(a, b)` (`[in, out]`). Kernel speed does not depend on the values, and an outer product costs one
    memory pass where drawing every value was most of the probe's time (tens of MB at Aesformer-T); each path
    builds its matrices in its own layout from the factors."""
    import numpy as np

    rng = np.random.default_rng(seed)
    c, m = shape.channels, shape.mlp

    def vector(n):
        return rng.standard_normal(n, dtype=np.float32) * np.float32(0.02)

    def matrix(rows, cols):
        return (rng.standard_normal(rows, dtype=np.float32) * np.float32(0.15),
                rng.standard_normal(cols, dtype=np.float32) * np.float32(0.15))

    return {"ln1_g": np.ones(c, np.float32), "ln1_b": vector(c), "qkv_w": matrix(c, 3 * c), "qkv_b": vector(3 * c),
            "proj_w": matrix(c, c), "proj_b": vector(c), "ln2_g": np.ones(c, np.float32), "ln2_b": vector(c),
            "fc1_w": matrix(c, m), "fc1_b": vector(m), "fc2_w": matrix(m, c), "fc2_b": vector(c)}


def _torch_probe(shapes: Sequence[BlockShape], weights, dtype):
    """A callable running every probe block once in torch (`dtype`), as the model's eager modules compute them
    (`nn.Linear`'s contiguous `[out, in]` weights)."""
    import torch
    import torch.nn.functional as F

    def tensor(value):
        if isinstance(value, tuple):  # the factors of an [in, out] matrix: nn.Linear holds its transpose
            a, b = value
            return torch.outer(torch.from_numpy(b).to(dtype), torch.from_numpy(a).to(dtype))
        return torch.from_numpy(value).to(dtype)

    blocks = []
    for shape, ws in zip(shapes, weights):
        t = {k: tensor(v) for k, v in ws.items()}
        x = torch.randn(shape.windows, shape.tokens, shape.channels, generator=torch.Generator().manual_seed(0))
        blocks.append((shape, t, x.to(dtype)))

    def run():
        with torch.inference_mode():
            for shape, t, x in blocks:
                n, length, c, heads = shape.windows, shape.tokens, shape.channels, shape.heads
                h = F.layer_norm(x, (c,), t["ln1_g"], t["ln1_b"])
                qkv = F.linear(h, t["qkv_w"], t["qkv_b"]).view(n, length, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
                o = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape(n, length, c)
                x = x + F.linear(o, t["proj_w"], t["proj_b"])
                h = F.layer_norm(x, (c,), t["ln2_g"], t["ln2_b"])
                x = x + F.linear(F.gelu(F.linear(h, t["fc1_w"], t["fc1_b"])), t["fc2_w"], t["fc2_b"])

    return run


PROBE_WEIGHTS = "probe.weights"


def _onnx_probe(shapes: Sequence[BlockShape], weights, folder) -> str:
    """The same blocks as one ONNX graph (inputs x0..xN, outputs y0..yN) in `folder`: `probe.onnx`, its matrices
    as external data in `probe.weights` (written straight from the arrays: building and serializing tens of MB of
    initializers in protobuf cost more than both runtimes' compiling them). Returns the graph's path."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    nodes, inputs, outputs, inits = [], [], [], []
    data = open(os.path.join(folder, PROBE_WEIGHTS), "wb")

    def const(name, value):
        value = np.outer(*value) if isinstance(value, tuple) else np.ascontiguousarray(value)
        if value.ndim < 2:
            inits.append(numpy_helper.from_array(value, name))
            return name
        data.write(b"\0" * (-data.tell() % 4096))  # page-aligned, as a runtime that maps the file may want
        offset = data.tell()
        value.tofile(data)
        tensor = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=value.shape,
                             data_location=TensorProto.EXTERNAL)
        for key, entry in (("location", PROBE_WEIGHTS), ("offset", offset), ("length", value.nbytes)):
            tensor.external_data.add(key=key, value=str(entry))
        inits.append(tensor)
        return name

    for i, (shape, ws) in enumerate(zip(shapes, weights)):
        p = f"b{i}_"
        n, length, c, heads = shape.windows, shape.tokens, shape.channels, shape.heads
        for key, value in ws.items():
            const(p + key, value)
        x = f"x{i}"
        inputs.append(helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, length, c]))

        def node(op, ins, attrs=None, name=None, _p=p):
            out = _p + (name or f"{op}{len(nodes)}")
            nodes.append(helper.make_node(op, ins, [out], **(attrs or {})))
            return out

        h = node("LayerNormalization", [x, p + "ln1_g", p + "ln1_b"], {"axis": -1})
        qkv = node("Add", [node("MatMul", [h, p + "qkv_w"]), p + "qkv_b"])
        qkv = node("Reshape", [qkv, const(p + "s_qkv", np.array([n, length, 3, heads, c // heads], np.int64))])
        qkv = node("Transpose", [qkv], {"perm": [2, 0, 3, 1, 4]})
        q, k, v = (node("Squeeze", [node("Gather", [qkv, const(p + f"i{j}", np.array([j], np.int64))],
                                         {"axis": 0}), const(p + f"a{j}", np.array([0], np.int64))])
                   for j in range(3))
        scores = node("Mul", [node("MatMul", [q, node("Transpose", [k], {"perm": [0, 1, 3, 2]})]),
                              const(p + "scale", np.array((c // heads) ** -0.5, np.float32))])
        o = node("MatMul", [node("Softmax", [scores], {"axis": -1}), v])
        o = node("Reshape", [node("Transpose", [o], {"perm": [0, 2, 1, 3]}),
                             const(p + "s_out", np.array([n, length, c], np.int64))])
        x = node("Add", [x, node("Add", [node("MatMul", [o, p + "proj_w"]), p + "proj_b"])])
        h = node("LayerNormalization", [x, p + "ln2_g", p + "ln2_b"], {"axis": -1})
        f = node("Add", [node("MatMul", [h, p + "fc1_w"]), p + "fc1_b"])
        f = node("Gelu", [f])
        f = node("Add", [node("MatMul", [f, p + "fc2_w"]), p + "fc2_b"])
        nodes.append(helper.make_node("Add", [x, f], [f"y{i}"]))
        outputs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [n, length, c]))
    data.close()
    graph = helper.make_graph(nodes, "aesformer_probe", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    path = os.path.join(folder, "probe.onnx")
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


def _runtime_probe(backend: str, runtime_dtype: str, graph: str, shapes: Sequence[BlockShape], read: dict):
    """A callable running the probe graph once on `backend` in `runtime_dtype`. `read`: what an earlier call of the
    same measurement already read (OpenVINO's graph is read once, compiled once per precision)."""
    import numpy as np

    feeds = {f"x{i}": np.random.default_rng(i).standard_normal((s.windows, s.tokens, s.channels)).astype(np.float32)
             for i, s in enumerate(shapes)}
    if backend == "onnxruntime":
        import onnxruntime

        from .onnx_backend import _threads

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = _threads(), 1
        options.log_severity_level = 3
        # idle threads that spin after a run would slow down whatever path is timed next
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        return lambda: session.run(None, feeds)
    import openvino

    from .onnx_backend import _threads

    if "openvino" not in read:
        core = openvino.Core()
        read["openvino"] = (core, core.read_model(graph))
    core, model = read["openvino"]
    compiled = core.compile_model(model, "CPU", {
        "INFERENCE_PRECISION_HINT": "bf16" if runtime_dtype == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": _threads(), "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    return lambda: request.infer(feeds)


def candidate_paths(bf16: bool, runtimes: Sequence[str]) -> List[Tuple[str, str]]:
    """(backend, dtype) pairs worth measuring: torch fp32 first (the reference), bf16 ones only where `bf16`."""
    paths = [("torch", "fp32")] + ([("torch", "bf16")] if bf16 else [])
    if "onnxruntime" in runtimes:
        paths.append(("onnxruntime", "fp32"))  # ONNX Runtime's CPU provider has no bf16 kernels for these ops
    if "openvino" in runtimes:
        paths += [("openvino", "fp32")] + ([("openvino", "bf16")] if bf16 else [])
    return paths


def measure_paths(paths: Sequence[Tuple[str, str]], config=None, runs: int = 3,
                  path_budget_s: float = 0.05) -> Dict[str, float]:
    """Seconds per run of the probe blocks (`probe_shapes(config)`) on each (backend, dtype) of `paths`, keyed
    "backend/dtype": the best of up to `runs` runs after a warm-up run (fewer once a path has used `path_budget_s`:
    a slow path is clearly slow after one). The paths are measured one after the other, torch first: the runtimes'
    thread pools, once started, keep cores busy for a while and would slow down the next path timed (torch's
    OpenMP threads most)."""
    import gc
    import tempfile

    import torch

    shapes = probe_shapes(config)
    weights = [_block_weights(shape, seed) for seed, shape in enumerate(shapes)]
    order = sorted(paths, key=lambda path: ("torch", "onnxruntime", "openvino").index(path[0]))
    best = {}
    folder = tempfile.TemporaryDirectory(prefix="aesformer-probe-")  # the runtimes' graph, until they have read it
    graph = _onnx_probe(shapes, weights, folder.name) if any(b != "torch" for b, _ in paths) else None
    read = {}
    gc.disable()
    try:
        for backend, dtype in order:
            if backend == "torch":
                runner = _torch_probe(shapes, weights, torch.bfloat16 if dtype == "bf16" else torch.float32)
            else:
                runner = _runtime_probe(backend, dtype, graph, shapes, read)
            runner()  # warm up: first-call allocations and kernel choice
            times = []
            while len(times) < max(1, runs) and (not times or sum(times) < path_budget_s):
                tic = time.perf_counter()
                runner()
                times.append(time.perf_counter() - tic)
            best[f"{backend}/{dtype}"] = min(times)
            del runner
    finally:
        gc.enable()
        read.clear()
        folder.cleanup()
    return {f"{b}/{d}": best[f"{b}/{d}"] for b, d in paths}


# ----------------------------------------------------------------------------------------------- the cached choice
def probe_key(config=None, cpuinfo_path: str = "/proc/cpuinfo") -> str:
    """What a measurement depends on: the CPU model, torch and runtime versions, threads and the model's shapes."""
    import importlib.metadata

    import torch

    versions = []
    for runtime in installed_runtimes():
        try:
            versions.append(f"{runtime}={importlib.metadata.version(runtime)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(runtime)
    shapes = ";".join(f"{s.windows}x{s.tokens}x{s.channels}/{s.heads}/{s.mlp}" for s in probe_shapes(config))
    return (f"v{PROBE_VERSION}|{cpu_model(cpuinfo_path)}|torch={torch.__version__}|{','.join(versions)}"
            f"|threads={torch.get_num_threads()}|{shapes}")


def measured_paths(config=None, cpuinfo_path: str = "/proc/cpuinfo", cache_dir=None, torch_only: bool = False
                   ) -> Tuple[Dict[str, float], bool]:
    """(seconds per path, whether they came from the cache): the probe's measurement for this machine and model
    shape, made on first use and kept in `cache_dir` (default: `user_cache_folder()`) / probe.json. `torch_only`:
    the torch paths alone (a run that scores with torch never starts a runtime's threads)."""
    from pathlib import Path

    bf16, _ = cpu_computes_bf16(cpuinfo_path)
    paths = candidate_paths(bf16, () if torch_only else installed_runtimes())
    key = probe_key(config, cpuinfo_path) + f"|{','.join(f'{b}/{d}' for b, d in paths)}"
    path = Path(cache_dir) if cache_dir is not None else user_cache_folder()
    path = path / PROBE_FILE
    try:
        cache = json.loads(path.read_text(encoding="utf-8"))
        cache = cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), dict):
        return {k: float(v) for k, v in cache[key].items()}, True
    measured = measure_paths(paths, config)
    cache[key] = measured
    try:  # a read-only cache folder costs a new probe next time, nothing else
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass
    return measured, False


@dataclass(frozen=True)
class Precision:
    """What to score with: `backend` (torch, onnxruntime, openvino), `dtype` ("fp32", "bf16", "fp16", "int8") and
    why."""
    backend: str
    dtype: str
    reason: str

    @property
    def torch_dtype(self):
        """The torch model's dtype (int8 quantizes the runtime's image-only file only: the torch rows stay fp32)."""
        import torch

        return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}[self.dtype]


def choose_path(measured: Dict[str, float], backend: str = "auto", dtype: str = "auto") -> Tuple[str, str, str]:
    """(backend, dtype, why) from the probe's seconds per path: among the paths `backend` and `dtype` allow, the
    fastest when it is at least `MIN_GAIN` times faster than torch fp32 (or than the first allowed path when torch
    fp32 is not allowed), else that reference path."""
    allowed = [key for key in measured if (backend == "auto" or key.split("/")[0] == backend)
               and (dtype == "auto" or key.split("/")[1] == dtype)]
    if not allowed:
        raise ValueError(f"no measured path for backend {backend} and dtype {dtype}")
    reference = "torch/fp32" if "torch/fp32" in allowed else allowed[0]
    fastest = min(allowed, key=lambda key: measured[key])
    base = measured.get("torch/fp32", measured[reference])
    speeds = ", ".join(f"{key} {base / measured[key]:.2f}x" for key in allowed if key != "torch/fp32")
    if fastest != reference and measured[reference] >= MIN_GAIN * measured[fastest]:
        pick = fastest
    else:
        pick = reference
    why = f"speed vs torch/fp32 at the model's layer shapes: {speeds or 'no other path'}"
    if pick == reference and fastest != reference:
        why += f"; nothing {MIN_GAIN:.2f}x faster than {reference}"
    return pick.split("/")[0], pick.split("/")[1], why


def resolve_precision(dtype: str = "auto", backend: str = "torch", device="cpu", config=None,
                      cpuinfo_path: str = "/proc/cpuinfo", cache_dir=None) -> Precision:
    """The `--dtype` and `--backend` values on `device` resolved to a `Precision`. `auto` (either) on a CPU is decided
    by the probe (`measured_paths`, cached); `config`: the model's, for its shapes (None: Aesformer-T's)."""
    import torch

    from .onnx_backend import BACKEND_CHOICES as runtime_backends
    from .onnx_backend import BackendError, check_backend

    device = torch.device(device)
    dtype, backend = (dtype or "auto").lower(), (backend or "torch").lower()
    if dtype not in SCORING_DTYPE_CHOICES:
        raise ValueError(f"--dtype must be one of {', '.join(SCORING_DTYPE_CHOICES)}, got {dtype!r}")
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if dtype == "fp16" and device.type == "cpu":
        raise ValueError("--dtype fp16 needs a GPU (CPUs emulate fp16); use --dtype bf16 or fp32 on a CPU")
    if dtype == "int8":
        if device.type != "cpu":
            raise BackendError(f"--dtype int8 runs on the CPU (ONNX Runtime): use --device cpu, or --dtype bf16 / "
                               f"fp16 on {device.type}")
        check_backend("onnxruntime" if backend == "auto" else backend, "int8")
        return Precision("onnxruntime", "int8", "int8 (asked for) on onnxruntime: the image-only branch quantized "
                         "dynamically; images with comments in fp32")
    if device.type != "cpu":
        if backend not in ("auto", "torch"):
            raise BackendError(f"--backend {backend} runs on the CPU: use --device cpu, or --backend torch on "
                               f"{device.type}")
        if dtype != "auto":
            return Precision("torch", dtype, f"{dtype} (asked for)")
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return Precision("torch", "bf16", f"bf16 (auto: {torch.cuda.get_device_name(device)} computes bf16)")
        return Precision("torch", "fp32", f"fp32 (auto: no native bf16 on this {device.type} device)")
    if backend in runtime_backends and dtype != "auto":
        check_backend(backend, dtype)
        return Precision(backend, dtype, f"{dtype} (asked for)" + ("" if backend == "torch" else f" on {backend}"))
    if backend in runtime_backends and backend != "torch":
        check_backend(backend)  # installed?
    bf16, why_bf16 = cpu_computes_bf16(cpuinfo_path)
    if dtype == "auto" and backend in ("torch", "onnxruntime") and not bf16:
        return Precision(backend, "fp32", f"fp32 (auto: {why_bf16})")
    if dtype == "auto" and backend == "onnxruntime":
        return Precision(backend, "fp32", "fp32 (auto: onnxruntime computes fp32)")
    measured, cached = measured_paths(config, cpuinfo_path, cache_dir, torch_only=backend == "torch")
    pick_backend, pick_dtype, why = choose_path(measured, backend, dtype)
    where = "cached probe" if cached else "probe"
    return Precision(pick_backend, pick_dtype,
                     f"{pick_dtype} (auto: {pick_backend}; {where} on {cpu_model(cpuinfo_path)}, {why})")


def resolve_dtype(choice: str, device, cpuinfo_path: str = "/proc/cpuinfo", config=None, cache_dir=None):
    """`(torch dtype, reason)` for a `--dtype` value on `device` with the torch backend (`resolve_precision`).

    `fp16` on a CPU is refused: most of its operators are emulated there and slower than fp32."""
    chosen = resolve_precision(choice, "torch", device, config, cpuinfo_path, cache_dir)
    return chosen.torch_dtype, chosen.reason


__all__ = ["BACKEND_CHOICES", "DTYPE_CHOICES", "MIN_GAIN", "Precision", "SCORING_DTYPE_CHOICES", "candidate_paths",
           "choose_path",
           "cpu_computes_bf16", "cpu_model", "measure_paths", "measured_paths", "probe_key", "probe_shapes",
           "resolve_dtype", "resolve_precision"]
