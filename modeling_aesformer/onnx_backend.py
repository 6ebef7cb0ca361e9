"""Both branches on ONNX runtimes: their export to ONNX and their answers from ONNX Runtime or OpenVINO.

The image-only graph answers like `model(pixel_values, adapter=NAME)` for images without comments: one input,
`pixel_values` (float32, `[batch, 3, height, width]`, the batch dynamic), and the outputs `score`, `std`,
`threshold` (`[batch]`), `distribution` and `bin_values` (`[batch, bins]`), as `AesformerOutput` holds them. The
with-comments graph answers like `model(pixel_values, input_ids, attention_mask, token_type_ids)` for images that all
have comments (the processor's four outputs; int64 text, batch and comment length dynamic), with the same outputs;
its heads answer whatever the adapter, so one file serves every adapter.

int8 (`--dtype int8`, ONNX Runtime only): the fp32 file quantized dynamically (`quantize_dynamic`: int8 weights,
activations quantized per call), made on first use and cached by the fp32 file's content. The first batch is also
answered in fp32 and the run stops, before anything is written, when int8 moves a score by more than
`INT8_MAX_SCORE_DIFFERENCE` (what the demo's trained model was measured to stay within; another model may not).

Layout (`aesformer export --onnx`, the one ONNX users of the Hub expect): `onnx/model.onnx` answers with the model's
default adapter (the one `aesformer score` answers with without `--adapter`), `onnx/model_<adapter>.onnx` with each
other adapter, `onnx/model_with_comments.onnx` for images with comments, and `onnx/adapters.json` says what each
file answers: an adapter's name (a string) for an image-only file, `{"branch": "with_comments"}` (an object, which no
adapter name can equal) for the with-comments file. A model folder without `onnx/` (or exported before the
with-comments file existed) is exported on the fly by `aesformer score --backend onnxruntime|openvino`, once: the
files are cached under `user_cache_folder()/onnx/<hash of the weights>/`.

Package code (not shipped to the Hub); onnx, onnxscript, onnxruntime and openvino are imported inside functions
(optional extras: `pip install aesformer[onnx]`, `aesformer[openvino]`).
"""

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence

BACKEND_CHOICES = ("torch", "onnxruntime", "openvino")
ONNX_DIR = "onnx"
ONNX_FILE = "model.onnx"
ANSWERS_FILE = "adapters.json"  # in onnx/: which adapter each file answers with (or WITH_COMMENTS_ANSWER)
INPUT_NAME = "pixel_values"
WITH_COMMENTS_FILE = "model_with_comments.onnx"
WITH_COMMENTS_ANSWER = {"branch": "with_comments"}  # its adapters.json entry: not a string, so never an adapter name
COMMENT_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAMES = ("score", "std", "threshold", "distribution", "bin_values")
CACHE_ENV = "AESFORMER_CACHE"
INT8_FILE = "model_int8.onnx"
INT8_MAX_SCORE_DIFFERENCE = 0.05  # the agreement bar int8 ships with (docs/precision.md); checked on the first batch
# The extra that installs each runtime, named in the error when it is missing.
_RUNTIME_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


class BackendError(ValueError):
    """A backend that cannot run here (its runtime is not installed, a precision it does not compute, ...); the
    message names the flag to change."""


def user_cache_folder() -> Path:
    """Where Aesformer caches what it measured or built for this machine: `$AESFORMER_CACHE`, else
    `$XDG_CACHE_HOME/aesformer`, else `~/.cache/aesformer`."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aesformer"


def installed_runtimes() -> List[str]:
    """The ONNX runtimes importable here, of `onnxruntime` and `openvino` (the export also needs onnxscript)."""
    import importlib.util

    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        return []
    return [name for name in ("onnxruntime", "openvino") if importlib.util.find_spec(name) is not None]


def check_backend(backend: str, runtime_dtype: str = "fp32") -> None:
    """`BackendError` unless `backend` can run here in `runtime_dtype` ("fp32", "bf16", or "int8": ONNX Runtime
    only)."""
    if backend not in BACKEND_CHOICES:
        raise BackendError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
    if backend == "torch":
        if runtime_dtype == "int8":
            raise BackendError("--dtype int8 runs the images without comments on ONNX Runtime: add --backend "
                               "onnxruntime (pip install 'aesformer[onnx]')")
        return
    if backend not in installed_runtimes():
        module, extra = _RUNTIME_PACKAGES[backend]
        raise BackendError(f"--backend {backend} needs {module} and onnxscript: pip install 'aesformer[{extra}]' "
                           "(or use --backend torch)")
    if backend == "onnxruntime" and runtime_dtype not in ("fp32", "int8"):
        raise BackendError(f"--backend onnxruntime computes fp32 or int8 (asked for {runtime_dtype}): use --dtype "
                           "fp32 or int8, or --backend openvino / torch for bf16")
    if backend == "openvino" and runtime_dtype == "int8":
        raise BackendError("--dtype int8 runs on ONNX Runtime: use --backend onnxruntime (or --dtype fp32 / bf16 "
                           "with openvino)")
    if backend == "onnxruntime" and runtime_dtype == "int8":
        import importlib.util

        if importlib.util.find_spec("onnxruntime.quantization") is None:
            raise BackendError("--dtype int8 needs onnxruntime's quantization module: pip install "
                               "'aesformer[onnx]' (or use --dtype fp32)")
        return
    if runtime_dtype not in ("fp32", "bf16"):
        raise BackendError(f"--backend {backend} computes fp32 or bf16 (asked for {runtime_dtype}): use --dtype fp32 "
                           "or bf16")


# ---------------------------------------------------------------------------------------------------------- export
def _answer_module(model, adapter: Optional[str]):
    """A module whose forward(pixel_values) returns the image-only answer of `adapter` (None = the default one)."""
    import torch

    class ImageOnlyAnswer(torch.nn.Module):
        def __init__(self, scorer):
            super().__init__()
            self.scorer = scorer

        def forward(self, pixel_values):
            out = self.scorer.forward_adapters(pixel_values, adapters=[adapter])[adapter]
            return tuple(getattr(out, name).float() for name in OUTPUT_NAMES)

    return ImageOnlyAnswer(model).eval()


def export_image_only(model, path, adapter: Optional[str] = None) -> Path:
    """Export the image-only answer of `adapter` (None: the model's default) to the ONNX file `path` (one input,
    `pixel_values`, dynamic batch; written to a temporary name, then renamed). The model is copied first (its
    attention is switched to the eager implementation for the export) and left as it was."""
    from .pipeline_aesformer import default_adapter

    adapter = default_adapter(model) if adapter is None else adapter
    return _export_eager_copy(model, path, lambda scorer, path: _export(scorer, path, adapter))


def _export_eager_copy(model, path, export) -> Path:
    """`export(scorer, path)` on an fp32 CPU copy of `model` switched to the eager attention, the exporter's
    loggers quietened; `path`'s folder made first."""
    import logging

    from .adapter_weights_aesformer import base_model

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scorer = copy.deepcopy(model).float().eval().cpu()
    # transformers' SDPA attention in Swin does not survive the ONNX exporter's decomposition (a view of the
    # attention output with the wrong strides); the eager attention exports and gives the same answers. (The
    # warning that the Aesformer model itself does not switch implementations is noise: its Swin tower does.)
    quiet = ("torch.onnx", "onnxscript", "onnx_ir", "transformers.modeling_utils")
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        base_model(scorer).set_attn_implementation("eager")
        return export(scorer, path)
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _export(scorer, path: Path, adapter: str) -> Path:
    import warnings

    import torch
    from torch.export import Dim

    from .adapter_weights_aesformer import base_model

    size = base_model(scorer).config.vision_config.image_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    example = torch.zeros(2, 3, *size)  # batch 2: a batch of 1 would be specialised away
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter narrates every step
        program = torch.onnx.export(_answer_module(scorer, adapter), (example,), dynamo=True, verbose=False,
                                    input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes={"pixel_values": {0: Dim("batch", min=1, max=65536)}})
    program.save(str(tmp))
    os.replace(tmp, path)
    return path


def _with_comments_module(model):
    """A module whose forward(pixel_values, input_ids, attention_mask, token_type_ids) returns the with-comments
    answer of every row (each row must have comment tokens): the Swin encoder and the with-comments branch only,
    not the model's per-row routing (which would trace the image-only branch too, on zero rows)."""
    import torch

    from .adapter_weights_aesformer import base_model

    class WithCommentsAnswer(torch.nn.Module):
        def __init__(self, scorer):
            super().__init__()
            self.scorer = scorer

        def forward(self, pixel_values, input_ids, attention_mask, token_type_ids):
            inner = base_model(self.scorer)
            batch = pixel_values.shape[0]
            stages, _ = inner._vision_tokens(pixel_values)
            branch = inner._with_comments(inner._stage_maps(stages)[-1], input_ids, attention_mask, token_type_ids)
            rows = torch.arange(batch, device=pixel_values.device)
            used = torch.ones(batch, dtype=torch.bool, device=pixel_values.device)
            out, _ = inner._assemble(batch, used, rows, branch, None, None, None)
            return tuple(getattr(out, name).float() for name in OUTPUT_NAMES)

    return WithCommentsAnswer(model).eval()


def export_with_comments(model, path) -> Path:
    """Export the with-comments answer to the ONNX file `path`: inputs `pixel_values` and the processor's int64
    `input_ids`, `attention_mask`, `token_type_ids` (`[batch, comment length]`), batch and length dynamic; the
    outputs of the image-only file. Every row given to it must have comments. The model is left as it was."""
    return _export_eager_copy(model, path, _export_with_comments)


def _export_with_comments(scorer, path: Path) -> Path:
    import warnings

    import torch
    from torch.export import Dim

    from .adapter_weights_aesformer import base_model

    config = base_model(scorer).config
    size = config.vision_config.image_size
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    # batch 2 and 7 tokens, one row padded: a size of 1 would be specialised away, and the mask must vary
    ids = torch.full((2, 7), 5, dtype=torch.long)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, 5:] = 0
    batch = Dim("batch", min=1, max=65536)
    length = Dim("length", min=1, max=config.text_config.max_position_embeddings)
    text = {0: batch, 1: length}
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter narrates every step
        program = torch.onnx.export(
            _with_comments_module(scorer), (torch.zeros(2, 3, *size), ids, mask, torch.zeros_like(ids)), dynamo=True,
            verbose=False, input_names=[INPUT_NAME, *COMMENT_INPUT_NAMES], output_names=list(OUTPUT_NAMES),
            dynamic_shapes={INPUT_NAME: {0: batch}, **{name: text for name in COMMENT_INPUT_NAMES}})
    program.save(str(tmp))
    os.replace(tmp, path)
    return path


def onnx_file_name(adapter: Optional[str], default: Optional[str]) -> str:
    """`model.onnx` for the default adapter's answer (or `adapter` None), `model_<adapter>.onnx` for the others
    (an adapter named `with_comments`: `model_with_comments.adapter.onnx`, as no adapter name holds a dot)."""
    if adapter is None or adapter == default:
        return ONNX_FILE
    return f"model_{adapter}.adapter.onnx" if f"model_{adapter}.onnx" == WITH_COMMENTS_FILE else f"model_{adapter}.onnx"


def export_onnx_folder(model, folder, adapters: Sequence[str] = ()) -> List[Path]:
    """Write `folder/model.onnx` (the default adapter's answer), `folder/model_<name>.onnx` for each other name of
    `adapters`, `folder/model_with_comments.onnx` (the with-comments answer) and `folder/adapters.json` (file name ->
    the adapter it answers with, or `WITH_COMMENTS_ANSWER`). Returns the paths written."""
    from .pipeline_aesformer import default_adapter

    folder = Path(folder)
    default = default_adapter(model)
    answers = {ONNX_FILE: default}
    written = [export_image_only(model, folder / ONNX_FILE, default)]
    for name in adapters:
        if name != default:
            answers[onnx_file_name(name, default)] = name
            written.append(export_image_only(model, folder / onnx_file_name(name, default), name))
    answers[WITH_COMMENTS_FILE] = WITH_COMMENTS_ANSWER
    written.append(export_with_comments(model, folder / WITH_COMMENTS_FILE))
    (folder / ANSWERS_FILE).write_text(json.dumps(answers, indent=1) + "\n", encoding="utf-8")
    return written + [folder / ANSWERS_FILE]


def weights_fingerprint(model, adapter: Optional[str]) -> str:
    """A hash of everything the exported answer depends on: every parameter and buffer (adapters included), the
    config, the adapter, the torch and package versions."""
    import torch

    from .adapter_weights_aesformer import base_model

    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{torch.__version__}|{adapter}|{base_model(model).config.to_json_string()}".encode())
    for name, tensor in list(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _answer_file(model_dir, answer, cached: Path, what: str, export, log, prefix: str) -> Path:
    """The model folder's own ONNX file whose `adapters.json` entry equals `answer`, else `cached`, made first by
    `export(cached)` when missing (once per weights)."""
    if model_dir is not None:
        own = Path(model_dir) / ONNX_DIR
        try:
            answers = json.loads((own / ANSWERS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            answers = {}
        for file_name, entry in answers.items():
            if entry == answer and (own / file_name).is_file():
                return own / file_name
    if not cached.is_file():
        import time

        start = time.perf_counter()
        log(f"{prefix}exporting {what} to ONNX (once; cached in {cached.parent})")
        export(cached)
        log(f"{prefix}exported in {time.perf_counter() - start:.1f} s")
    return cached


def onnx_file_for(model, adapter: str, model_dir=None, log=print, prefix: str = "") -> Path:
    """The ONNX file answering for `adapter`: the model folder's own (`onnx/`, from `aesformer export --onnx`,
    found through its `adapters.json`), else one exported now into the cache (once per weights)."""
    cached = user_cache_folder() / ONNX_DIR / weights_fingerprint(model, adapter) / ONNX_FILE
    return _answer_file(model_dir, adapter, cached, f"the image-only branch ({adapter})",
                        lambda path: export_image_only(model, path, adapter), log, prefix)


def file_digest(path) -> str:
    """A hash of a file's bytes (what its int8 quantization depends on, with the onnxruntime version)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def int8_file_for(fp32_path, log=print, prefix: str = "") -> Path:
    """The dynamic int8 quantization of the ONNX file `fp32_path` (ONNX Runtime's `quantize_dynamic`: int8
    weights, activations quantized per call), made once and cached by the fp32 file's content."""
    import onnxruntime

    key = hashlib.blake2b(f"{file_digest(fp32_path)}|{onnxruntime.__version__}".encode(), digest_size=16).hexdigest()
    cached = user_cache_folder() / ONNX_DIR / "int8" / key / INT8_FILE
    if not cached.is_file():
        import logging
        import time

        from onnxruntime.quantization import QuantType, quantize_dynamic

        start = time.perf_counter()
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp.onnx")
        level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # the quantizer logs a hint per graph to the root logger
        try:
            quantize_dynamic(str(fp32_path), str(tmp), weight_type=QuantType.QInt8)
        finally:
            logging.getLogger().setLevel(level)
        os.replace(tmp, cached)
        log(f"{prefix}quantized {Path(fp32_path).name} to int8 in {time.perf_counter() - start:.1f} s (once; cached "
            f"in {cached.parent})")
    return cached


def with_comments_file_for(model, model_dir=None, log=print, prefix: str = "") -> Path:
    """The ONNX file of the with-comments answer: the model folder's own (`onnx/`, the `adapters.json` entry equal
    to `WITH_COMMENTS_ANSWER`), else one exported now into the cache (once per weights)."""
    # the cache folder of the weights' hash without an adapter; its own file name (never an image-only file's)
    cached = user_cache_folder() / ONNX_DIR / weights_fingerprint(model, None) / WITH_COMMENTS_FILE
    return _answer_file(model_dir, WITH_COMMENTS_ANSWER, cached, "the with-comments branch",
                        lambda path: export_with_comments(model, path), log, prefix)


# --------------------------------------------------------------------------------------------------------- runtimes
def _threads() -> int:
    import torch

    return max(1, torch.get_num_threads())


def onnxruntime_session(path, threads: Optional[int] = None):
    """An ONNX Runtime CPU session with every graph optimisation, on `threads` threads (default: torch's count)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or _threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    # threads that spin idle after a run would slow down the torch forward of the batch's rows with comments
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def openvino_model(path, runtime_dtype: str = "fp32", threads: Optional[int] = None):
    """An OpenVINO model compiled for the CPU, computing in `runtime_dtype` ("fp32" or "bf16"; OpenVINO keeps the
    precision-sensitive parts, e.g. the softmax, in f32 either way)."""
    import openvino

    config = {"INFERENCE_PRECISION_HINT": "bf16" if runtime_dtype == "bf16" else "f32",
              "INFERENCE_NUM_THREADS": threads or _threads(), "PERFORMANCE_HINT": "LATENCY"}
    return openvino.Core().compile_model(str(path), "CPU", config)


class RuntimeAnswer:
    """One exported answer on a runtime: `__call__(pixel_values numpy float32)` -> `{output name: numpy}`; the
    with-comments file takes `input_ids`, `attention_mask`, `token_type_ids` (numpy, as int64) too. `runtime_dtype`
    "int8" takes the quantized file (`int8_file_for`) as `path`."""

    def __init__(self, path, backend: str, runtime_dtype: str = "fp32"):
        self.backend = backend
        if backend == "onnxruntime":
            self.session = onnxruntime_session(path)
        elif backend == "openvino":
            self.compiled = openvino_model(path, runtime_dtype)
            self.request = self.compiled.create_infer_request()
        else:
            raise BackendError(f"no ONNX runtime named {backend!r}")

    def __call__(self, pixel_values, **comment_inputs) -> Dict[str, object]:
        import numpy as np

        feed = {INPUT_NAME: np.ascontiguousarray(pixel_values, dtype=np.float32)}
        feed.update({name: np.ascontiguousarray(value, dtype=np.int64) for name, value in comment_inputs.items()})
        if self.backend == "onnxruntime":
            values = self.session.run(list(OUTPUT_NAMES), feed)
            return dict(zip(OUTPUT_NAMES, values))
        result = self.request.infer(feed)
        return {name: np.asarray(result[self.compiled.output(name)]) for name in OUTPUT_NAMES}


class RuntimeBackend:
    """The image-only answers of the adapters `names` on an ONNX runtime (`backend`, in `runtime_dtype`), and with
    `with_comments` the with-comments answer too, for the scoring module: `outputs(pixel_values)` and
    `comment_outputs(pixel_values, input_ids, attention_mask, token_type_ids)` -> `{name: output}` with the
    attributes `summarize_outputs` reads. Without `with_comments`, `runs_comments` is False: rows with comments are
    the caller's (torch's).

    In int8 the first batch is answered in fp32 too: `BackendError` when a score moves by more than
    `INT8_MAX_SCORE_DIFFERENCE` (raised before the scoring module yields any row), else one line through `log`. The
    with-comments answer stays fp32 in int8 (the agreement bar is the image-only branch's)."""

    def __init__(self, model, names: Sequence[str], backend: str, runtime_dtype: str = "fp32", model_dir=None,
                 log=print, prefix: str = "", with_comments: bool = False):
        check_backend(backend, runtime_dtype)
        self.backend, self.runtime_dtype = backend, runtime_dtype
        self.log, self.prefix = log, prefix
        files = {name: onnx_file_for(model, name, model_dir, log, prefix) for name in names}
        self.references = {}  # int8: the fp32 answers the first batch is checked against, dropped after it
        if runtime_dtype == "int8":
            self.references = {name: RuntimeAnswer(path, backend) for name, path in files.items()}
            files = {name: int8_file_for(path, log, prefix) for name, path in files.items()}
        self.answers = {name: RuntimeAnswer(path, backend, runtime_dtype) for name, path in files.items()}
        self.comment_answer = None
        if with_comments:
            self.comment_answer = RuntimeAnswer(with_comments_file_for(model, model_dir, log, prefix), backend,
                                                "fp32" if runtime_dtype == "int8" else runtime_dtype)

    def _check_int8(self, name: str, pixels, answered) -> None:
        import numpy as np

        reference = self.references.pop(name)(pixels)["score"]  # once: the fp32 session is released after it
        worst = int(np.argmax(np.abs(answered["score"] - reference)))
        difference = float(abs(answered["score"][worst] - reference[worst]))
        where = f"adapter {name}, the first {len(reference)} image(s) without comments"
        if not difference <= INT8_MAX_SCORE_DIFFERENCE:  # NaN included
            raise BackendError(
                f"--dtype int8 moves this model's scores too far from fp32 ({where}): up to {difference:.3f} "
                f"(fp32 {reference[worst]:.3f}, int8 {answered['score'][worst]:.3f}; the limit is "
                f"{INT8_MAX_SCORE_DIFFERENCE}). Use --dtype fp32 with this model")
        self.log(f"{self.prefix}int8 check ({where}): scores within {difference:.4f} of fp32 (limit "
                 f"{INT8_MAX_SCORE_DIFFERENCE})")

    @property
    def runs_comments(self) -> bool:
        return self.comment_answer is not None

    def close(self) -> None:
        """Release the runtimes' models, the last made first. OpenVINO's compiled model installs its own alternate
        signal stack on the thread that compiled it and puts back the one it found when released: released in any
        other order, the thread is left with a freed signal stack, and the next Python signal handler (e.g. torch
        DataLoader's SIGCHLD when a worker exits) crashes the process."""
        # (getattr: `__init__` may have stopped before making them, e.g. on a runtime that is not installed)
        made = [*getattr(self, "references", {}).values(), *getattr(self, "answers", {}).values(),
                getattr(self, "comment_answer", None)]
        self.references, self.answers, self.comment_answer = {}, {}, None
        while made:
            made.pop()

    def __del__(self):
        self.close()

    def outputs(self, pixel_values) -> Dict[str, object]:
        import types

        import torch

        pixels = pixel_values.detach().float().cpu().numpy()
        outputs = {}
        for name, answer in self.answers.items():
            answered = answer(pixels)
            if name in self.references:
                self._check_int8(name, pixels, answered)
            values = {key: torch.from_numpy(value) for key, value in answered.items()}
            values["used_comments"] = torch.zeros(pixels.shape[0], dtype=torch.uint8)
            outputs[name] = types.SimpleNamespace(**values)
        return outputs

    def comment_outputs(self, pixel_values, input_ids, attention_mask, token_type_ids=None) -> Dict[str, object]:
        """The with-comments answer of rows that all have comment tokens, as `{name: output}` for every adapter
        name (the with-comments heads answer whatever the adapter)."""
        import types

        import numpy as np
        import torch

        if self.comment_answer is None:
            raise BackendError("this runtime was prepared without the with-comments branch (with_comments=False)")
        mask = (np.ones(tuple(input_ids.shape), dtype=np.int64) if attention_mask is None
                else attention_mask.detach().cpu().numpy())
        # columns no row uses are dropped: the processor pads to the longest comment of the whole batch
        length = int(np.flatnonzero(mask.any(axis=0)).max()) + 1
        ids = input_ids.detach().cpu().numpy()[:, :length]
        types_ = np.zeros_like(ids) if token_type_ids is None else token_type_ids.detach().cpu().numpy()[:, :length]
        answer = self.comment_answer(pixel_values.detach().float().cpu().numpy(), input_ids=ids,
                                     attention_mask=mask[:, :length], token_type_ids=types_)
        values = {key: torch.from_numpy(value) for key, value in answer.items()}
        values["used_comments"] = torch.ones(ids.shape[0], dtype=torch.uint8)
        output = types.SimpleNamespace(**values)
        return {name: output for name in self.answers}


ImageOnlyRuntime = RuntimeBackend  # its name before the with-comments branch could run on a runtime too


def prepare_backend(model, names: Sequence[str], backend: Optional[str], runtime_dtype: str = "fp32", model_dir=None,
                    log=print, prefix: str = "", with_comments: bool = True) -> Optional[RuntimeBackend]:
    """What `scoring.score_collated` takes as `backend`: None for torch, else the image-only answers of `names` on
    that runtime and, with `with_comments`, the with-comments answer (exported first when the model folder has no
    `onnx/` file for it). Pass `with_comments=False` when no input has comments: nothing to export for them."""
    if backend is None or backend == "torch":
        return None
    return RuntimeBackend(model, names, backend, runtime_dtype, model_dir, log, prefix, with_comments)


__all__ = ["BACKEND_CHOICES", "BackendError", "ImageOnlyRuntime", "ANSWERS_FILE", "INT8_MAX_SCORE_DIFFERENCE",
           "ONNX_DIR", "ONNX_FILE", "OUTPUT_NAMES", "RuntimeAnswer", "check_backend", "export_image_only",
           "export_onnx_folder", "file_digest", "installed_runtimes", "int8_file_for", "onnx_file_for", "onnx_file_name",
           "onnxruntime_session", "openvino_model", "prepare_backend", "user_cache_folder", "weights_fingerprint",
           "COMMENT_INPUT_NAMES", "RuntimeBackend", "WITH_COMMENTS_ANSWER", "WITH_COMMENTS_FILE",
           "export_with_comments", "with_comments_file_for"]
