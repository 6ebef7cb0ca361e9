"""The `--dtype` choice of the command-line tools: which precision the weights are loaded in.

`auto` picks bf16 where the hardware multiplies bf16 matrices natively — a CPU with AVX512-BF16 or AMX (from
/proc/cpuinfo), a CUDA device with bf16 support — and fp32 elsewhere (on a CPU without those instructions, bf16 is
emulated and slower than fp32). Whatever the weights' precision, the score heads, the softmax, the distribution,
the EMD and the score stay in fp32 (see `AesformerPreTrainedModel._keep_in_fp32_modules_strict`).
"""

import argparse
from typing import Optional, Tuple

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_bf16_flags(cpuinfo_path: str = "/proc/cpuinfo") -> Tuple[str, ...]:
    """The bf16 matrix instructions this CPU announces (`avx512_bf16`, `amx_bf16`); empty when none or unknown."""
    try:
        with open(cpuinfo_path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return tuple(flag for flag in _CPU_BF16_FLAGS if flag in flags)
    except OSError:
        pass
    return ()


def resolve_dtype(choice: str, device, cpuinfo_path: str = "/proc/cpuinfo"):
    """`(torch dtype, reason)` for a `--dtype` value on `device` (a `torch.device` or a string).

    `fp16` on a CPU is refused: most of its operators are emulated there and slower than fp32."""
    import torch

    device = torch.device(device)
    choice = (choice or "auto").lower()
    if choice not in DTYPE_CHOICES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}, got {choice!r}")
    if choice == "fp32":
        return torch.float32, "fp32 (asked for)"
    if choice == "bf16":
        return torch.bfloat16, "bf16 (asked for)"
    if choice == "fp16":
        if device.type == "cpu":
            raise ValueError("--dtype fp16 needs a GPU (CPUs emulate fp16); use --dtype bf16 or fp32 on a CPU")
        return torch.float16, "fp16 (asked for)"
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16, f"bf16 (auto: {torch.cuda.get_device_name(device)} computes bf16)"
        return torch.float32, "fp32 (auto: this GPU has no native bf16)"
    if device.type == "cpu":
        flags = cpu_bf16_flags(cpuinfo_path)
        if flags:
            return torch.bfloat16, f"bf16 (auto: the CPU has {', '.join(flags)})"
        return torch.float32, "fp32 (auto: the CPU has no AVX512-BF16 or AMX; bf16 would be emulated)"
    return torch.float32, f"fp32 (auto: no bf16 check for {device.type} devices)"


def dtype_name(dtype) -> str:
    import torch

    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))


def add_dtype_argument(parser: argparse.ArgumentParser, default: str = "auto") -> None:
    parser.add_argument(
        "--dtype", choices=DTYPE_CHOICES, default=default,
        help="precision of the weights: auto (default) = bf16 where the hardware computes it natively (a CPU with "
        "AVX512-BF16 or AMX, a GPU with bf16), else fp32. The score heads, softmax, distribution and score always "
        "stay fp32. The command prints what it chose.",
    )


def chosen_dtype(args, device, log=print, prefix: str = "") -> Optional[object]:
    """Resolves `args.dtype` on `device` and prints the choice (one line)."""
    dtype, reason = resolve_dtype(getattr(args, "dtype", "auto"), device)
    log(f"{prefix}precision: {reason}")
    return dtype


__all__ = ["DTYPE_CHOICES", "add_dtype_argument", "chosen_dtype", "cpu_bf16_flags", "dtype_name", "resolve_dtype"]
