"""Do two builds of the native library compute the same logits, byte for byte?

For a refactor or a new kernel level that must not change results: both
builds load the model side by side in one process and run the same tokens,
once as a prompt (in batches of --batch, logits at every position) and then
token by token, in every engine mode the file supports and at every SIMD
level this CPU has. One line per case; exit 0 when every case is identical.

    make lib && cp prosparse_cpu/libprosparse.so /tmp/lib_a.so   # before the change
    make lib && cp prosparse_cpu/libprosparse.so /tmp/lib_b.so   # after it
    python scripts/same_logits.py MODEL.gguf /tmp/lib_a.so /tmp/lib_b.so

With --model-b the second build runs another file (a re-converted copy, say).
"""
from __future__ import annotations

import argparse
import ctypes as C
import os
import sys

import numpy as np

from ab_libs import add_build_args, own_copy
from prosparse_cpu._lib import MODES, _declare, ps_model_info, ps_session_params


class Run:
    """One library copy and one model file in it."""

    def __init__(self, lib_path: str, model_path: str):
        self.L = _declare(C.CDLL(lib_path))
        self.path = model_path
        self.model = None

    def load(self, level: int) -> None:
        """(Re)load the model at a SIMD level: loading lays the weights out for the level in force."""
        if self.model:
            self.L.ps_model_free(self.model)
        self.L.ps_simd_set(level)
        self.model = self.L.ps_model_load(self.path.encode())
        if not self.model:
            sys.exit(f"error: {self.path}: {self.L.ps_last_error().decode()}")
        info = ps_model_info()
        self.L.ps_model_get_info(self.model, C.byref(info))
        self.n_vocab = info.n_vocab

    def supports(self, mode: str) -> bool:
        return self.L.ps_model_check_mode(self.model, MODES[mode]) == 0

    def logits(self, mode: str, ids: list[int], batch: int, decode: int, threads: int) -> np.ndarray:
        """Prompt logits at every position, then those of `decode` single-token steps, as one array."""
        L = self.L
        s = L.ps_session_new(self.model, C.byref(ps_session_params(threads, len(ids) + decode + 1, batch, MODES[mode])))
        if not s:
            sys.exit(f"error: {self.path}: {L.ps_last_error().decode()}")
        try:
            prompt = np.zeros((len(ids), self.n_vocab), np.float32)
            arr = (C.c_int32 * len(ids))(*ids)
            if L.ps_session_eval(s, arr, len(ids), prompt.ctypes.data_as(C.POINTER(C.c_float))) != 0:
                sys.exit(f"error: {L.ps_last_error().decode()}")
            steps = []
            for t in ids[:decode]:
                if L.ps_session_eval(s, (C.c_int32 * 1)(t), 1, None) != 0:
                    sys.exit(f"error: {L.ps_last_error().decode()}")
                steps.append(np.ctypeslib.as_array(L.ps_session_logits(s), shape=(self.n_vocab,)).copy())
            return np.concatenate([prompt.reshape(-1)] + steps)
        finally:
            L.ps_session_free(s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_build_args(ap)
    ap.add_argument("--model-b", default=None, help="the file build B runs (default: the same model)")
    ap.add_argument("--tokens", type=int, default=40, help="prompt length")
    ap.add_argument("--batch", type=int, default=16, help="tokens per forward pass of the prompt")
    ap.add_argument("--decode", type=int, default=8, help="single-token steps after the prompt")
    a = ap.parse_args()
    for p in (a.model, a.model_b or a.model):
        if not os.path.isfile(p):
            sys.exit(f"error: {p}: no such file")
    lib_b = own_copy(a.lib_b) if os.path.realpath(a.lib_a) == os.path.realpath(a.lib_b) else a.lib_b
    runs = [Run(a.lib_a, a.model), Run(lib_b, a.model_b or a.model)]
    top = min(r.L.ps_simd_supported() for r in runs)
    n_same = n_diff = 0
    for level in range(top + 1):
        if runs[0].L.ps_simd_set(level) != level:
            continue  # another architecture's level: it would run scalar again
        for r in runs:
            r.load(level)
        ids = [int(t) for t in np.random.default_rng(0).integers(1, runs[0].n_vocab, a.tokens)]
        for mode in MODES:
            if not runs[0].supports(mode):
                continue
            if not runs[1].supports(mode):
                print(f"level {level} {mode}: build B cannot run this mode")
                n_diff += 1
                continue
            x, y = (r.logits(mode, ids, a.batch, a.decode, a.threads) for r in runs)
            if x.shape == y.shape and x.tobytes() == y.tobytes():
                print(f"level {level} {mode}: identical")
                n_same += 1
                continue
            n_diff += 1
            if x.shape != y.shape:
                print(f"level {level} {mode}: different vocabularies ({x.size} vs {y.size} logits)")
                continue
            rel = float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(x))), 1e-30))
            print(f"level {level} {mode}: differs, max |A-B| / max |A| = {rel:.3g}")
    print(f"{n_same} identical, {n_diff} different")
    return 0 if n_diff == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
