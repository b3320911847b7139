"""A/B two builds of the native library in one process, for kernel work.

A virtual machine can give each process its own memory speed (by where the
host puts its pages) and, at times, its own compute speed, so two builds
timed in two processes can differ by more than most changes are worth. Here
both builds load the model side by side in one process and decode in
alternating rounds; the ratio of their medians is what to read.

    make lib && cp prosparse_cpu/libprosparse.so /tmp/lib_a.so   # before the change
    make lib && cp prosparse_cpu/libprosparse.so /tmp/lib_b.so   # after it
    python scripts/ab_libs.py MODEL.gguf /tmp/lib_a.so /tmp/lib_b.so --mode predict [--rounds 8]

With one library twice and --mode-b it compares two engine modes instead,
and with --simd-b two SIMD levels (B then runs from a copy of the library):
    python scripts/ab_libs.py MODEL.gguf LIB LIB --mode dense --mode-b sparse
    python scripts/ab_libs.py MODEL.gguf LIB LIB --simd-b 1
"""
from __future__ import annotations

import argparse
import ctypes as C
import os
import shutil
import statistics
import sys
import tempfile
import time

from prosparse_cpu._lib import (CACHE_TYPES, MODES, PS_SIMD_AVX2, PS_SIMD_AVX512, PS_SIMD_NEON, PS_SIMD_NEON_DOT,
                                PS_SIMD_SCALAR, _declare, ps_session_params)

# prosparse.h's SIMD levels (x86: AVX2, AVX-512; aarch64: NEON, NEON with the dot product)
SIMD_LEVELS = {PS_SIMD_SCALAR: "scalar", PS_SIMD_AVX2: "AVX2", PS_SIMD_AVX512: "AVX-512",
               PS_SIMD_NEON: "NEON", PS_SIMD_NEON_DOT: "NEON_DOT"}


class Build:
    """One copy of the library (distinct paths load as distinct copies), its model and session."""

    def __init__(self, lib_path: str, model_path: str, mode: int, threads: int, simd: int | None,
                 depth: int = 0, cache_type: int = 0):
        L = self.L = _declare(C.CDLL(lib_path))   # the package's own prototypes, on this copy
        if simd is not None:
            got = L.ps_simd_set(simd)
            if got != simd:   # ps_simd_set falls back to a level this CPU runs: that is not what was asked
                sys.exit(f"error: {lib_path}: SIMD level {simd} ({SIMD_LEVELS[simd]}) does not run on this CPU "
                         f"(it would run {got}, {SIMD_LEVELS.get(got, '?')})")
        self.model = L.ps_model_load(model_path.encode())
        if not self.model:
            sys.exit(f"error: {lib_path}: {L.ps_last_error().decode()}")
        # (a build whose ps_session_params has no cache_type reads only the first fields)
        n_ctx = max(512, depth + 1024)
        params = ps_session_params(threads, n_ctx, 64, mode, cache_type)
        self.session = L.ps_session_new(self.model, C.byref(params))
        if not self.session:
            sys.exit(f"error: {lib_path}: {L.ps_last_error().decode()}")
        self.tok = (C.c_int32 * 1)()
        self.depth = depth
        if depth:  # the prompt once; each round truncates back to it
            prompt = (C.c_int32 * depth)(*[1 + (i * 7919) % 5000 for i in range(depth)])
            if L.ps_session_eval(self.session, prompt, depth, None) != 0:
                sys.exit(f"error: {L.ps_last_error().decode()}")

    def decode(self, n: int) -> float:
        """tokens/s of n single-token steps after one token from an empty cache
        (after the depth-token prompt with --depth)."""
        if self.depth:
            self.L.ps_session_truncate(self.session, self.depth)
        else:
            self.L.ps_session_reset(self.session)
        self.tok[0] = 1
        self.L.ps_session_eval(self.session, self.tok, 1, None)
        t0 = time.perf_counter()
        for i in range(n):
            self.tok[0] = 5 + i % 100
            if self.L.ps_session_eval(self.session, self.tok, 1, None) != 0:
                sys.exit(f"error: {self.L.ps_last_error().decode()}")
        return n / (time.perf_counter() - t0)


def add_build_args(ap: argparse.ArgumentParser) -> None:
    """The model, the two library builds and the thread count (shared with same_logits.py)."""
    ap.add_argument("model")
    ap.add_argument("lib_a")
    ap.add_argument("lib_b")
    ap.add_argument("--threads", type=int, default=2)


def own_copy(lib_path: str) -> str:
    """A copy of the library at a new path: one path loads one library, whose
    SIMD level is process-wide, so a second build of the same file needs one."""
    path = os.path.join(tempfile.mkdtemp(prefix="ab_libs"), "b.so")
    shutil.copy(lib_path, path)
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_args(ap)
    ap.add_argument("--mode", choices=MODES, default="dense")
    ap.add_argument("--mode-b", choices=MODES, default=None, help="build B's mode (default: --mode)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64, help="decode steps per round")
    ap.add_argument("--simd-a", type=int, choices=list(SIMD_LEVELS), default=None,
                    help="force build A's SIMD level: " + ", ".join(f"{k} {v}" for k, v in SIMD_LEVELS.items())
                    + " (one this CPU runs)")
    ap.add_argument("--simd-b", type=int, choices=list(SIMD_LEVELS), default=None, help="likewise for build B")
    ap.add_argument("--depth", type=int, default=0, help="decode after a prompt of this many tokens")
    ap.add_argument("--cache-a", choices=list(CACHE_TYPES), default="f16",
                    help="build A's KV cache type (a build without cache types ignores it)")
    ap.add_argument("--cache-b", choices=list(CACHE_TYPES), default="f16", help="likewise for build B")
    a = ap.parse_args()
    mode_b = a.mode_b or a.mode
    lib_b = a.lib_b
    if os.path.realpath(a.lib_a) == os.path.realpath(lib_b) and a.simd_a != a.simd_b:
        lib_b = own_copy(a.lib_b)
    builds = [Build(a.lib_a, a.model, MODES[a.mode], a.threads, a.simd_a, a.depth, CACHE_TYPES[a.cache_a]),
              Build(lib_b, a.model, MODES[mode_b], a.threads, a.simd_b, a.depth, CACHE_TYPES[a.cache_b])]
    bw = builds[0].L.ps_model_read_bandwidth(builds[0].model, a.threads, 3)
    for b in builds:  # warm-up
        b.decode(16)
    rates: list[list[float]] = [[], []]
    for r in range(a.rounds):
        for k in ((0, 1) if r % 2 == 0 else (1, 0)):  # alternate who goes first
            rates[k].append(builds[k].decode(a.tokens))
    ma, mb = statistics.median(rates[0]), statistics.median(rates[1])
    modes = a.mode if mode_b == a.mode else f"A {a.mode}, B {mode_b}"
    print(f"weights read at {bw:.1f} GB/s in this process; {modes}, {a.threads} threads, "
          f"{a.rounds} rounds of {a.tokens} tokens" + (f" at depth {a.depth}" if a.depth else ""))
    print(f"A {ma:.1f} t/s ({min(rates[0]):.1f}-{max(rates[0]):.1f})   B {mb:.1f} t/s "
          f"({min(rates[1]):.1f}-{max(rates[1]):.1f})   B/A {mb / ma:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
