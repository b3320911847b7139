"""What a benchmark records about the machine it ran on: a description of it,
its memory read bandwidth, and whether those measurements hold still."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

BW_SPREAD = 1.2  # largest/smallest bandwidth sample of a run beyond which its bounds are called unreliable


def machine_info() -> dict:
    info = {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            info["mem_total_kib"] = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        from .._lib import lib

        info["prosparse_simd"] = {0: "scalar", 1: "avx2", 2: "avx512", 3: "neon", 4: "neon_dot"}.get(lib().ps_simd_get(), "?")
    except Exception:
        pass
    try:
        import llama_cpp

        info["llama_cpp_python"] = llama_cpp.__version__
        info["llama_cpp_system"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    except Exception:
        pass
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        info["git_commit"] = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                                            text=True, timeout=5).stdout.strip() or None
    except Exception:
        pass
    return info


def measure_read_bandwidth(threads: int, gib: float = 1.0, reps: int = 5) -> float:
    """Main-memory read bandwidth in GB/s with `threads` threads of the engine's own
    pool (native ps_debug_read_bandwidth): the median of `reps` passes over a
    `gib` GiB buffer, far above any L3."""
    from .._lib import read_bandwidth

    return read_bandwidth(threads, gib, reps)


def bandwidth_unstable(result: dict) -> bool:
    """True when a run's read-bandwidth samples spread too far for one bound to describe it."""
    mach = result["machine"]
    for key in ("read_bandwidth_samples_gb_s", "weights_read_bandwidth_samples_gb_s"):
        xs = [x for x in mach.get(key) or [] if x]
        if len(xs) > 1 and max(xs) > BW_SPREAD * min(xs):
            return True
    return False


# ---- other processes' share of the CPUs ------------------------------------------
# llama.cpp's worker threads spin-wait for each other: when another process takes
# one of the cores they need, its decode speed collapses while ours degrades
# gently, and every ratio between the two says more about the other process than
# about the engines. So a run measures how much CPU time others took.
BUSY_SHARE = 0.10  # others' share of all CPUs' time beyond which a run's ratios are called unreliable


@dataclass
class CpuClock:
    """One reading of the CPU time spent by the whole machine and by this process."""

    wall: float       # seconds, monotonic
    busy: float       # CPU-seconds every CPU spent not idle since boot (steal included), from /proc/stat
    ours: float       # CPU-seconds of this process, all its threads (llama.cpp's included)
    n_cpu: int


def cpu_clock() -> CpuClock | None:
    """Read the clocks now; None where /proc/stat is missing or unreadable."""
    try:
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
        fields = [int(x) for x in lines[0].split()[1:]]
        n_cpu = sum(1 for ln in lines if ln.startswith("cpu") and ln[3:4].isdigit())
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    busy = sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields))
    return CpuClock(time.monotonic(), busy / os.sysconf("SC_CLK_TCK"), time.process_time(), max(n_cpu, 1))


def others_share(a: CpuClock | None, b: CpuClock | None, min_seconds: float = 0.4) -> float | None:
    """Share of all CPUs' time between two readings that went to other processes
    (0: none, 1: every CPU busy with them). None for a window too short for the
    kernel's tick-counted figures (min_seconds) or a missing reading."""
    if a is None or b is None or b.wall - a.wall < min_seconds:
        return None
    others = (b.busy - a.busy) - (b.ours - a.ours)
    return min(max(others / ((b.wall - a.wall) * b.n_cpu), 0.0), 1.0)


def sample_others(seconds: float = 0.5) -> float | None:
    """Others' share of the CPUs over `seconds` of this process sleeping."""
    a = cpu_clock()
    time.sleep(seconds)
    return others_share(a, cpu_clock())


def busy_verdict(before: float | None, during: float | None, threshold: float = BUSY_SHARE) -> dict:
    """Whether other work on the machine makes a run's engine ratios unreliable, from
    others' share of the CPUs just before the run and during it."""
    figures = {"others_cpu_share_before": before, "others_cpu_share_during": during,
               "busy_threshold_share": threshold}
    over = [name for name, x in (("before", before), ("during", during)) if x is not None and x >= threshold]
    return figures | {"busy": bool(over), "busy_when": over}


def busy_note(mach: dict) -> str:
    """Why a busy run's ratios are unreliable, with the measured figures."""
    figures = ", ".join(f"{100 * mach[k]:.0f}% {w}" for w, k in (("just before the run", "others_cpu_share_before"),
                                                                ("during it", "others_cpu_share_during"))
                        if mach.get(k) is not None)
    return (f"the machine was busy: other processes' share of the CPUs' time was {figures} (limit "
            f"{100 * mach.get('busy_threshold_share', BUSY_SHARE):.0f}%). llama.cpp's threads wait for each other "
            "spinning and slow down far more than ours when a core is taken, so the ratios to llama.cpp are "
            "unreliable; measure again on a quiet machine.")
