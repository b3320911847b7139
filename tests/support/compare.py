"""Comparing logits: the engine's on a file, random inputs, error measures."""
from __future__ import annotations

import numpy as np
import pytest


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| relative to max |b|."""
    return float(np.abs(a - b).max() / np.abs(b).max())


def random_sequences(n_vocab, n_seq=4, length=32, seed=1):
    rng = np.random.default_rng(seed)
    return [[int(x) for x in rng.integers(0, n_vocab, length)] for _ in range(n_seq)]


def engine():
    """prosparse_cpu.Model and ProSparseError (imported on use)."""
    from prosparse_cpu import Model, ProSparseError
    return Model, ProSparseError


def open_engine(path, threads=2, n_ctx=256, cache_type="f32"):
    """Our engine on path (F32 KV cache: compared with float references), or skip while the native library is not built."""
    Model, ProSparseError = engine()
    try:
        return Model(str(path), threads=threads, n_ctx=n_ctx, cache_type=cache_type)
    except ProSparseError as e:
        if "cannot load native library" in str(e):
            pytest.skip(f"engine not built: {e}")
        raise


def engine_logits(path, ids):
    """Our engine's logits at every position of ids, or skip while the native library is not built."""
    with open_engine(path) as m:
        return m.eval_all(ids)


def top1_agreement(ref: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """(raw agreement, agreement where the reference is not a near-tie).

    Random tiny models have many near-tied logits; a position counts as a
    near-tie when the reference's top-2 margin is below 3x the RMS logit error
    that Q8_0 rounding caused in that same sequence.
    """
    top2 = np.sort(ref, -1)[:, -2:]
    noise = np.sqrt(np.mean((got - ref) ** 2))
    clear = (top2[:, 1] - top2[:, 0]) > 3 * noise
    same = ref.argmax(-1) == got.argmax(-1)
    return float(same.mean()), float(same[clear].mean()) if clear.any() else 1.0
