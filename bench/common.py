"""Shared helpers of the benchmark scripts: machine description, load check, interleaved timing, matmul peak,
tables and JSON results. Not part of the package; the scripts put this folder on `sys.path` themselves."""

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOAD_LIMIT = 1.2  # 1-minute load average above which timings on a 2-core machine are not trustworthy


def setup_offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' loading/saving bars too


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> List[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if f.startswith(("avx512f", "avx512_bf16", "amx", "avx2", "fma")))
    except OSError:
        pass
    return []


def load_average() -> List[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict:
    import torch

    info = {
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_start": load_average(),
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    return info


def warn_if_loaded(limit: float = LOAD_LIMIT) -> bool:
    """Print a warning (and return True) when the 1-minute load average is above `limit`."""
    load = load_average()
    if load and load[0] > limit:
        print(f"WARNING: load average {load[0]:.2f} > {limit}: other work shares these cores; timings will be "
              f"slow and noisy (rerun when the machine is idle).", file=sys.stderr)
        return True
    return False


def cpu_busy_fraction(seconds: float = 1.0) -> float:
    """Share of all CPUs busy over the next `seconds` (from /proc/stat; NaN where unavailable)."""
    def sample():
        with open("/proc/stat", encoding="utf-8") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError):
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def wait_for_idle(timeout: float, busy_limit: float = 0.15, quiet_seconds: int = 3) -> bool:
    """Wait (up to `timeout` seconds) until the CPUs have been idle (< `busy_limit` busy) for `quiet_seconds`
    seconds in a row and the 1-minute load average is at most LOAD_LIMIT. Returns whether that happened;
    0 = do not wait."""
    if timeout <= 0:
        return True
    deadline, quiet = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        quiet = quiet + 1 if cpu_busy_fraction(1.0) < busy_limit else 0
        load = load_average()
        if quiet >= quiet_seconds and (not load or load[0] <= LOAD_LIMIT):
            return True
    print(f"WARNING: the machine did not become idle within {timeout:.0f} s; measuring anyway.", file=sys.stderr)
    return False


class ForeignLoad:
    """CPU used by OTHER processes while this benchmark runs, in cores on average (e.g. 0.05 = idle machine,
    1.0 = another process kept one core busy). The 1-minute load average cannot tell this: it counts this
    benchmark's own threads too. Busy time of all CPUs (/proc/stat) minus this process's own CPU time (children
    included once they have been waited for)."""

    def __init__(self):
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.start = self._sample()

    def _sample(self):
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                values = [int(v) for v in f.readline().split()[1:]]
            busy = (sum(values) - values[3] - (values[4] if len(values) > 4 else 0)) / self.hz
        except (OSError, ValueError):
            busy = float("nan")
        own = os.times()
        return time.monotonic(), busy, own.user + own.system + own.children_user + own.children_system

    def cores(self) -> float:
        end = self._sample()
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, others / wall) if wall > 0 else float("nan")


def add_common_arguments(parser) -> None:
    parser.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                        help="first wait up to SECONDS for the CPUs to be idle (other jobs share them; default 0)")


def start_measuring(wait_idle: float):
    """The common start of a benchmark, after its settings are made: wait (up to `wait_idle` s) for an idle machine,
    record it, start counting foreign CPU time, warn when loaded. Returns `(machine_info, ForeignLoad)`."""
    wait_for_idle(wait_idle)
    info = machine_info()
    foreign = ForeignLoad()
    warn_if_loaded()
    return info, foreign


def interleaved(candidates: Dict[str, Callable[[], object]], repeats: int = 5, warmup: int = 1,
                sync: Optional[Callable[[], None]] = None) -> Dict[str, List[float]]:
    """Seconds per call of each candidate, measured round-robin (A B C A B C ...) so that a change of machine load
    hits every candidate alike. `warmup` untimed rounds first."""
    sync = sync or (lambda: None)
    times = {name: [] for name in candidates}
    for round_index in range(warmup + repeats):
        for name, fn in candidates.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if round_index >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> float:
    """Relative spread (max - min) / median of the repeats."""
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m else float("nan")


def matmul_candidate(size: int = 2048, dtype=None):
    """A callable doing one `size`³ matmul, and its FLOPs (2·n³)."""
    import torch

    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g, dtype=dtype or torch.float32)
    b = torch.randn(size, size, generator=g, dtype=dtype or torch.float32)
    out = torch.empty(size, size, dtype=a.dtype)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * size**3


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call (matmuls, convolutions, attention), counted by `torch.utils.flop_counter`."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def table(rows: List[dict], columns: Sequence[str], title: Optional[str] = None) -> str:
    """A GitHub-flavoured Markdown table of `rows` (dicts) with the given columns."""
    def fmt(value):
        if isinstance(value, float):
            if value != value:
                return "n/a"
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return "" if value is None else str(value)

    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        lines.append("| " + " | ".join(fmt(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)


def goal_row(goal: str, measured: float, target: float, unit: str, higher_is_better: bool = True,
             target_label: Optional[str] = None) -> dict:
    met = measured >= target if higher_is_better else measured <= target
    sign = "≥" if higher_is_better else "≤"
    return {"goal": goal, "target": f"{sign} {target_label or f'{target:g}'} {unit}",
            "measured": f"{measured:.3g} {unit}",
            "met": "yes" if met else "NO", "_met": bool(met)}


def report_foreign(foreign: "ForeignLoad", limit: float = 0.15) -> float:
    """Print (and return) how many cores other processes used during the run; warn above `limit`."""
    cores = foreign.cores()
    print(f"other processes used {cores:.2f} cores on average during this run (load average "
          f"{load_average()} now, which counts this run's own threads too)")
    if cores > limit:
        print(f"WARNING: other processes used {cores:.2f} cores during the run: timings are disturbed; rerun "
              f"on an idle machine (--wait-idle helps).", file=sys.stderr)
    return cores


def save_results(name: str, payload: dict, path: Optional[str] = None, foreign_cores: Optional[float] = None) -> Path:
    out = Path(path) if path else RESULTS_DIR / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload)
    if foreign_cores is not None:
        payload["other_processes_cores"] = foreign_cores
    payload.setdefault("load_average_end", load_average())
    payload.setdefault("timestamp", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2, default=str)
        f.write("\n")
    return out


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status in MB: "VmRSS" (now) or "VmHWM" (peak RSS of this process image).
    Not `getrusage().ru_maxrss`: Linux carries that over from the parent across fork+exec."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def set_threads(threads: Optional[int]) -> None:
    import torch

    if threads:
        torch.set_num_threads(threads)
