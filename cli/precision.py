"""The `--dtype` flag of the commands; the choice itself is `modeling_aesformer.precision.resolve_dtype`."""

import argparse
import os

# The same values as `modeling_aesformer.precision.DTYPE_CHOICES` (a test keeps them equal): the flag is built for
# `--help`, which answers before the model package (and torch) loads.
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
DTYPE_ENV = "AESFORMER_DTYPE"


def add_dtype_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    """`--dtype`; its default comes from the environment variable `AESFORMER_DTYPE` when set (a site-wide choice,
    e.g. fp32 for runs that must give the same digits on every machine), else `default`."""
    default = os.environ.get(DTYPE_ENV) or default
    parser.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=default,
        help=f"precision of the weights (default: {default}, or ${DTYPE_ENV}): auto = bf16 where the hardware computes "
        "it faster than fp32 (a CPU with AMX, an AMD CPU with AVX512-BF16, a GPU with bf16), else fp32. The score "
        "heads, softmax, distribution and score always stay fp32. The command prints what it chose and why.",
    )


def chosen_dtype(args, device, log=print, prefix: str = ""):
    """Resolves `args.dtype` on `device` and prints the choice (one line)."""
    from modeling_aesformer.precision import resolve_dtype

    dtype, reason = resolve_dtype(getattr(args, "dtype", "auto"), device)
    log(f"{prefix}precision: {reason}")
    return dtype


__all__ = ["DTYPE_CHOICES", "add_dtype_argument", "chosen_dtype"]
