"""Which precision to load the weights in: the choice behind every command's `--dtype` (the flag itself is the
command line's, `aesformer_cli.precision`).

`auto` picks bf16 where the hardware multiplies bf16 matrices faster than fp32 ones — a CPU with AMX
(`amx_bf16`), an AMD CPU with AVX512-BF16 (Zen 4 and later run its bf16 dot products at twice the fp32 FMA rate), a
CUDA device with bf16 support — and fp32 elsewhere. An Intel CPU with AVX512-BF16 but without AMX (Cooper Lake, or
a virtual machine that hides AMX) computes bf16 natively but no faster: its `vdpbf16ps` issues on one port, and a
bf16 matmul measured at about half the fp32 speed on such a machine (an Emerald Rapids VM, torch 2.13): `auto`
keeps fp32 there (`--dtype bf16` still forces it). Without these instructions bf16 is emulated and slower.
Whatever the weights' precision, the score heads, the softmax, the distribution, the EMD and the score stay in fp32
(see `AesformerPreTrainedModel._keep_in_fp32_modules_strict`).
"""

from typing import Tuple

DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


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


def cpu_bf16_is_fast(cpuinfo_path: str = "/proc/cpuinfo") -> Tuple[bool, str]:
    """(whether bf16 matmuls beat fp32 on this CPU, why), from its vendor and flags (see the module docstring)."""
    vendor, flags = _cpuinfo(cpuinfo_path)
    if "amx_bf16" in flags:
        return True, "the CPU has AMX (amx_bf16)"
    if "avx512_bf16" in flags and vendor == "AuthenticAMD":
        return True, "the CPU (AMD) has avx512_bf16 at twice the fp32 FMA rate"
    if "avx512_bf16" in flags:
        return False, (f"the CPU ({vendor or 'unknown vendor'}) has avx512_bf16 but no AMX: bf16 matmuls are no "
                       "faster than fp32 there")
    return False, "the CPU has no AVX512-BF16 or AMX: bf16 would be emulated"


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
        fast, why = cpu_bf16_is_fast(cpuinfo_path)
        return (torch.bfloat16, f"bf16 (auto: {why})") if fast else (torch.float32, f"fp32 (auto: {why})")
    return torch.float32, f"fp32 (auto: no bf16 check for {device.type} devices)"


__all__ = ["DTYPE_CHOICES", "cpu_bf16_is_fast", "resolve_dtype"]
