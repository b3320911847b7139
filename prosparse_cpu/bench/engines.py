"""The engines a benchmark times, behind one small interface:
reset() empties the cache, start(prefix) leaves exactly the prefix ids in it
(evaluating them only when the cache does not hold them already: a depth
prompt is evaluated once, then cut back to before each timed run),
decode(ids) evaluates a batch and returns when the work is finished,
counters() gives the sparsity counters of the last run (None for llama.cpp),
close() frees it."""

from __future__ import annotations

import numpy as np

from .._lib import ProSparseError


class LlamaCppEngine:
    """Dense llama.cpp on a file, timed through llama-cpp-python's low-level decode
    API, with llama_synchronize() after each decode so a timing covers finished work;
    its default F16 KV cache, flash attention on unless asked otherwise."""

    kind = "llama.cpp"
    mode = "dense"

    def __init__(self, path: str, threads: int, n_ctx: int, n_batch: int, flash_attn: bool = True):
        import llama_cpp

        self.llama_cpp = llama_cpp
        self.name = "llama.cpp"
        self.path = path
        try:
            self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                       n_batch=n_batch, flash_attn=flash_attn, verbose=False)
        except Exception as e:  # llama-cpp-python raises ValueError("Failed to load model from file")
            raise ProSparseError(f"llama.cpp cannot load {path}: {e}") from None
        self.ctx = self.llm._ctx.ctx
        self.n_vocab = self.llm.n_vocab()
        self._prefix: list[int] = []  # the ids of start()'s last prefix, while the cache begins with them

    def reset(self) -> None:
        lc = self.llama_cpp
        lc.llama_memory_clear(lc.llama_get_memory(self.ctx), True)
        self._prefix = []

    def start(self, prefix) -> None:
        ids = [int(t) for t in prefix]
        if not ids:
            return self.reset()
        lc = self.llama_cpp
        if self._prefix == ids:  # drop what the last run appended
            lc.llama_memory_seq_rm(lc.llama_get_memory(self.ctx), -1, len(ids), -1)
            return
        self.reset()
        for i in range(0, len(ids), 512):
            self.decode(np.asarray(ids[i:i + 512]))
        self._prefix = ids

    def decode(self, ids: np.ndarray) -> None:
        lc = self.llama_cpp
        arr = (lc.llama_token * len(ids))(*[int(t) for t in ids])
        rc = lc.llama_decode(self.ctx, lc.llama_batch_get_one(arr, len(ids)))
        if rc != 0:
            raise ProSparseError(f"llama.cpp: llama_decode returned {rc}")
        lc.llama_synchronize(self.ctx)

    def counters(self) -> dict | None:
        return None

    def close(self) -> None:
        self.llm.close()


class OurEngine:
    """Our engine in one mode; modes of one file share a Model (set_mode between turns)."""

    kind = "prosparse"

    def __init__(self, model, mode: str):
        self.model = model
        self.mode = mode
        self.name = f"ours {mode}"
        self.path = model.path
        self.n_vocab = model.n_vocab

    def reset(self) -> None:
        self.model.set_mode(self.mode)
        self.model.reset()

    def start(self, prefix) -> None:
        """(the modes share one cache: a prefix any of them evaluated serves all)"""
        ids = [int(t) for t in prefix]
        self.model.set_mode(self.mode)
        if ids and self.model.tokens[:len(ids)] == ids:
            self.model.truncate(len(ids))
            return
        self.model.reset()
        if ids:
            self.model.eval(ids)

    def decode(self, ids: np.ndarray) -> None:
        self.model.eval(ids)

    def counters(self) -> dict | None:
        s = self.model.stats()
        return {k: s[k] for k in ("sparsity", "predicted_share", "recall", "tokens")} | {
            "layer_sparsity": [x["sparsity"] for x in s["layers"]],
            "layer_recall": [x["recall"] for x in s["layers"]],
        }

    def close(self) -> None:
        pass
