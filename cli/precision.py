"""The `--dtype` and `--backend` flags of the commands; the choice itself is
`modeling_aesformer.precision.resolve_precision` (auto: measured on this machine, cached)."""

import argparse
import os

# The same values as `modeling_aesformer.precision.DTYPE_CHOICES` (a test keeps them equal): the flag is built for
# `--help`, which answers before the model package (and torch) loads.
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
SCORING_DTYPE_CHOICES = DTYPE_CHOICES + ("int8",)  # `score` only (`modeling_aesformer.precision`, a test keeps it)
DTYPE_ENV = "AESFORMER_DTYPE"
# The same values as `modeling_aesformer.precision.BACKEND_CHOICES` (a test keeps them equal).
BACKEND_CHOICES = ("auto", "torch", "onnxruntime", "openvino")
BACKEND_ENV = "AESFORMER_BACKEND"


def add_dtype_argument(parser: argparse.ArgumentParser, default: str = "auto", int8: bool = False) -> None:
    """`--dtype`; its default comes from the environment variable `AESFORMER_DTYPE` when set (a site-wide choice,
    e.g. fp32 for runs that must give the same digits on every machine), else `default`. `int8`: the command also
    takes int8 (scoring image files on ONNX Runtime)."""
    default = os.environ.get(DTYPE_ENV) or default
    parser.add_argument(
        "--dtype", choices=SCORING_DTYPE_CHOICES if int8 else DTYPE_CHOICES, default=default,
        help=f"precision of the weights (default: {default}, or ${DTYPE_ENV}): auto = bf16 where it is measured faster "
        "than fp32 on this machine and this model's layer shapes (a short probe on first use, cached; a GPU with "
        "bf16 uses it), else fp32. The score heads, softmax, distribution and score always stay fp32. The command "
        "prints what it chose and why."
        + (" int8 (with --backend onnxruntime): the images without comments on a dynamically quantized model, "
           "faster than fp32 where the CPU has int8 dot products (bench/README.md); each run checks its first batch against fp32 and stops if a score moves "
           "by more than 0.05." if int8 else ""),
    )


def add_backend_argument(parser: argparse.ArgumentParser, default: str = "torch") -> None:
    """`--backend`; its default comes from the environment variable `AESFORMER_BACKEND` when set, else `default`."""
    default = os.environ.get(BACKEND_ENV) or default
    parser.add_argument(
        "--backend", choices=BACKEND_CHOICES, default=default,
        help=f"what runs the model, images with and without comments (default: {default}, or ${BACKEND_ENV}): "
        "torch; onnxruntime (fp32; pip install 'aesformer[onnx]'); openvino (fp32 or bf16 as --dtype says; pip "
        "install 'aesformer[openvino]'); auto = the fastest measured on this machine (the probe of --dtype auto), "
        "torch unless another is measured faster. The ONNX runtimes use the model folder's onnx/ (aesformer export "
        "--onnx), else export it once into the cache.",
    )


def chosen_dtype(args, device, log=print, prefix: str = ""):
    """Resolves `args.dtype` on `device` and prints the choice (one line)."""
    from modeling_aesformer.precision import resolve_dtype

    dtype, reason = resolve_dtype(getattr(args, "dtype", "auto"), device)
    log(f"{prefix}precision: {reason}")
    return dtype


def chosen_precision(args, device, config=None, log=print, prefix: str = ""):
    """Resolves `args.dtype` and `args.backend` on `device` for a model of `config` (its shapes drive the probe of
    `auto`) and prints the choice (one line). Returns a `modeling_aesformer.precision.Precision`."""
    from modeling_aesformer.precision import resolve_precision

    chosen = resolve_precision(getattr(args, "dtype", "auto"), getattr(args, "backend", "torch"), device, config)
    log(f"{prefix}precision: {chosen.reason}")
    return chosen


__all__ = ["BACKEND_CHOICES", "DTYPE_CHOICES", "SCORING_DTYPE_CHOICES", "add_backend_argument", "add_dtype_argument", "chosen_dtype",
           "chosen_precision"]
