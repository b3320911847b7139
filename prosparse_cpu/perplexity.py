"""Perplexity in llama-perplexity's convention, so quality is measured next to speed.

The text is tokenized once and cut into non-overlapping windows of n_ctx
tokens. Each window is evaluated from an empty cache (its first token becomes
BOS when the file asks for one); only the second half of each window is
scored, so every scored token sees at least n_ctx/2 tokens of context. PPL is
exp(mean negative log-likelihood); the spread is the standard error of that
mean carried through exp (PPL x SE), as llama.cpp prints it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ._lib import ProSparseError


@dataclass
class PerplexityResult:
    ppl: float
    ppl_stderr: float
    n_tokens_scored: int
    n_windows: int
    n_ctx: int
    chunk_ppl: list[float] = field(default_factory=list)  # PPL of each window alone
    # each scored token's negative log-likelihood, in text order (for paired comparisons)
    nll: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under its row of logits (float64, stable)."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    logz = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return logz - x[np.arange(len(targets)), targets]


def perplexity(model, text: str, n_ctx: int = 512, max_windows: int | None = None, progress=None
               ) -> PerplexityResult:
    """PPL of text under model (in its current mode). progress(i, n) is called after each window."""
    if n_ctx < 4:
        raise ProSparseError(f"window of {n_ctx} tokens is too short")
    if n_ctx > model.n_ctx:
        raise ProSparseError(f"window of {n_ctx} tokens exceeds the model's context of {model.n_ctx}")
    ids = model.tokenize(text, add_bos=False)
    n_windows = len(ids) // n_ctx
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows < 1:
        raise ProSparseError(f"the text has {len(ids)} tokens; at least one window of {n_ctx} is needed")
    bos = model.token_bos if model.add_bos else -1
    first = n_ctx // 2
    nll_all, chunk_ppl = [], []
    for w in range(n_windows):
        window = list(ids[w * n_ctx:(w + 1) * n_ctx])
        if bos >= 0:
            window[0] = bos
        model.reset()
        logits = model.eval_all(window)
        # logits[i] predicts window[i + 1]: score positions first .. n_ctx-2
        nll = token_nll(logits[first:n_ctx - 1], np.asarray(window[first + 1:], dtype=np.int64))
        nll_all.append(nll)
        chunk_ppl.append(float(math.exp(nll.mean())))
        if progress:
            progress(w + 1, n_windows)
    nll = np.concatenate(nll_all)
    mean = float(nll.mean())
    se = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else 0.0
    ppl = math.exp(mean)
    return PerplexityResult(ppl=ppl, ppl_stderr=ppl * se, n_tokens_scored=len(nll), n_windows=n_windows,
                            n_ctx=n_ctx, chunk_ppl=chunk_ppl, nll=nll)
