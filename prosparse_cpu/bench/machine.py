"""What a benchmark records about the machine it ran on: a description of it,
its memory read bandwidth, and whether those measurements hold still."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys

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

        info["prosparse_simd"] = {0: "scalar", 1: "avx2", 2: "avx512"}.get(lib().ps_simd_get(), "?")
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
    `gib` GiB buffer, far above any L3. Repeated calls agree within a few percent."""
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
