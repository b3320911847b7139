"""The Model class: the Python face of the engine (DESIGN.md's API contract).

    m = Model("model.gguf", threads=2, n_ctx=2048, mode="dense")
    ids = m.tokenize("Hello")          # list[int]
    m.eval(ids)                        # appends to the KV cache
    m.logits()                         # numpy float32 [n_vocab], last position
    for piece in m.generate("Hi", max_tokens=64, temperature=0.0): ...

One Model owns one loaded file (ps_model) and one session (KV cache, thread
pool, counters). It keeps the list of token ids in its cache, so generate()
and chat() reuse the longest common prefix of a new prompt instead of
evaluating the whole conversation again (llama-cpp-python's habit).
"""

from __future__ import annotations

import codecs
import ctypes
import os
import time
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from . import _lib
from ._lib import MODE_NAMES, MODES, ProSparseError, check, fail, lib


def kv_bytes_per_token(n_layer: int, n_head_kv: int, head_dim: int, cache_type: str = "f16") -> int:
    """Bytes a session's KV cache holds per position of n_ctx (K and V of every
    layer): the engine allocates this times n_ctx (ps_session_kv_bytes)."""
    parse_cache_type(cache_type)
    row = {"f32": 4 * head_dim, "f16": 2 * head_dim, "q8_0": head_dim // 32 * 34}[cache_type]
    return 2 * n_layer * n_head_kv * row


@dataclass(frozen=True)
class ModelInfo:
    """Hyper-parameters and facts of a loaded file (from ps_model_get_info)."""

    arch: str
    activation: str
    activation_threshold: float
    n_vocab: int
    n_ctx_train: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_freq_base: float
    rms_eps: float
    tied_output: bool
    has_predictor: bool
    predictor_rank: int
    weight_type: int
    n_params: int
    file_size: int
    powerinfer: bool = False       # a PowerInfer (PWRI) file, read as it is
    predictor_threshold: float = 0.0

    def kv_bytes_per_token(self, cache_type: str = "f16") -> int:
        """Bytes the KV cache holds per position (K and V of every layer)."""
        return kv_bytes_per_token(self.n_layer, self.n_head_kv, self.head_dim, cache_type)

    @property
    def weight_type_name(self) -> str:
        try:
            import gguf

            return gguf.GGMLQuantizationType(self.weight_type).name
        except (ImportError, ValueError):
            return f"type{self.weight_type}"


@dataclass
class GenerationStats:
    """Timing of the last generate()/chat() call (what the CLI prints)."""

    n_prompt: int = 0        # tokens evaluated for the prompt (after prefix reuse)
    n_cached: int = 0        # prompt tokens reused from the KV cache
    n_generated: int = 0     # tokens sampled
    prompt_s: float = 0.0
    generate_s: float = 0.0
    stop_reason: str = ""    # "eog", "stop", "length", "context"
    tokens: list = field(default_factory=list)  # ids sampled (an end-of-generation id included)

    @property
    def tokens_per_s(self) -> float:
        return self.n_generated / self.generate_s if self.generate_s > 0 else 0.0


def parse_mode(mode: str | int) -> int:
    if isinstance(mode, int) and mode in MODE_NAMES:
        return mode
    if isinstance(mode, str) and mode in MODES:
        return MODES[mode]
    raise ProSparseError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", _lib.PS_ERR_ARG)


def parse_cache_type(cache_type: str) -> int:
    if isinstance(cache_type, str) and cache_type in _lib.CACHE_TYPES:
        return _lib.CACHE_TYPES[cache_type]
    raise ProSparseError(f"unknown KV cache type {cache_type!r}; choose one of {', '.join(_lib.CACHE_TYPES)}",
                         _lib.PS_ERR_ARG)


def _int32_array(ids: Iterable[int]) -> np.ndarray:
    arr = np.ascontiguousarray(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
    if arr.ndim != 1:
        raise ProSparseError("token ids must be a flat sequence", _lib.PS_ERR_ARG)
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise ProSparseError("token id out of int32 range", _lib.PS_ERR_ARG)
    return arr.astype(np.int32)


class Model:
    """A loaded GGUF model and one inference session over it."""

    def __init__(self, path: str | os.PathLike, threads: int = 2, n_ctx: int = 2048,
                 mode: str = "dense", n_batch: int = 512, measure: bool = False, copy_weights: bool = True,
                 cache_type: str = "f16", activation_threshold: float = 0.0):
        """copy_weights=False runs from the file's mapping (less resident memory the
        OS cannot reclaim, slower decode; the same results). cache_type: how the KV
        cache stores keys and values, "f16" (default), "q8_0" or "f32" (exact).
        activation_threshold t > 0 runs a relu or fatrelu model as FATReLU t (gate
        values below t count as zero) in every mode; 0 keeps the file's activation."""
        self._model = None
        self._session = None
        self.path = os.fspath(path)
        self.activation_threshold = float(activation_threshold)
        mode_id = parse_mode(mode)
        self.cache_type = cache_type
        parse_cache_type(cache_type)
        if int(threads) < 1:
            raise ProSparseError(f"threads must be >= 1, got {threads}", _lib.PS_ERR_ARG)
        if not os.path.exists(self.path):
            raise ProSparseError(f"{self.path}: no such file", _lib.PS_ERR_IO)
        L = lib()
        self._lib = L  # keep a reference for close() during interpreter shutdown
        handle = L.ps_model_load_ex(os.fsencode(self.path), 0 if copy_weights else _lib.PS_LOAD_MAP_ONLY)
        if not handle:
            raise fail(L.ps_last_error_code() or _lib.PS_ERR_FORMAT, self.path)
        self._model = handle
        raw = _lib.ps_model_info()
        check(L.ps_model_get_info(self._model, ctypes.byref(raw)), self.path)
        fields = {name: getattr(raw, name) for name, _ in _lib.ps_model_info._fields_}
        for name, value in fields.items():
            if isinstance(value, bytes):
                fields[name] = value.decode("utf-8", "replace")
        fields["tied_output"] = bool(fields["tied_output"])
        fields["has_predictor"] = bool(fields["has_predictor"])
        fields["powerinfer"] = bool(fields["powerinfer"])
        self.info = ModelInfo(**fields)
        self._piece_cache: dict[tuple[int, bool], bytes] = {}
        try:
            self._open_session(threads, n_ctx, n_batch, mode_id)
        except ProSparseError:
            self.close()
            raise
        if measure:
            self.set_measure(True)

    def _open_session(self, threads: int, n_ctx: int, n_batch: int, mode_id: int) -> None:
        """A new session over self._model, with an empty record of its cache."""
        L = self._lib
        params = L.ps_session_default_params()
        params.n_threads = int(threads)
        params.n_ctx = int(n_ctx)
        params.n_batch = int(n_batch)
        params.mode = mode_id
        params.cache_type = parse_cache_type(self.cache_type)
        params.activation_threshold = self.activation_threshold
        session = L.ps_session_new(self._model, ctypes.byref(params))
        if not session:
            raise fail(_lib.PS_ERR_ARG, self.path)
        self._session = session
        self.threads = int(threads)
        self.n_ctx = int(L.ps_session_n_ctx(session))
        self.n_batch = int(n_batch)
        self.kv_bytes = int(L.ps_session_kv_bytes(session))  # allocated for K and V, n_ctx positions
        self._tokens: list[int] = []  # ids in the KV cache, in order
        self.last_generation = GenerationStats()

    # ---- lifetime ----------------------------------------------------------
    def close(self) -> None:
        """Free the session and the model; safe to call twice."""
        L = getattr(self, "_lib", None)
        if self._session and L is not None:
            L.ps_session_free(self._session)
        self._session = None
        if self._model and L is not None:
            L.ps_model_free(self._model)
        self._model = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._session is None

    def _live(self):
        if self._session is None:
            raise ProSparseError("model is closed", _lib.PS_ERR_ARG)
        return self._lib

    # ---- metadata ------------------------------------------------------------
    def meta_str(self, key: str) -> str | None:
        """A string metadata value (e.g. "tokenizer.chat_template"), None when absent."""
        L = self._live()
        buf = ctypes.create_string_buffer(256)
        n = L.ps_model_meta_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            check(L.ps_model_meta_str(self._model, key.encode(), buf, len(buf)), key)
        return buf.raw[:n].decode("utf-8", "replace")

    @property
    def n_vocab(self) -> int:
        return self.info.n_vocab

    @property
    def token_bos(self) -> int:
        return self._live().ps_token_bos(self._model)

    @property
    def token_eos(self) -> int:
        return self._live().ps_token_eos(self._model)

    @property
    def token_eot(self) -> int:
        return self._live().ps_token_eot(self._model)

    @property
    def add_bos(self) -> bool:
        return bool(self._live().ps_model_add_bos(self._model))

    def is_eog(self, token: int) -> bool:
        return bool(self._live().ps_token_is_eog(self._model, int(token)))

    # ---- tokenizer -------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = True, special: bool = False) -> list[int]:
        """UTF-8 text -> token ids. add_bos prepends BOS (when the model has one);
        special=True turns text like "<|im_start|>" into its control token."""
        L = self._live()
        data = text.encode("utf-8")
        cap = len(data) + 8
        while True:
            out = (ctypes.c_int32 * cap)()
            n = check(L.ps_tokenize(self._model, data, len(data), out, cap, int(add_bos), int(special)), "tokenize")
            if n <= cap:
                return list(out[:n])
            cap = n

    def token_bytes(self, token: int, special: bool = False) -> bytes:
        """The raw bytes of one token (may be part of a UTF-8 character)."""
        key = (int(token), bool(special))
        piece = self._piece_cache.get(key)
        if piece is not None:
            return piece
        L = self._live()
        buf = ctypes.create_string_buffer(32)
        n = check(L.ps_token_to_piece(self._model, int(token), buf, len(buf), int(special)), f"token {token}")
        if n > len(buf):
            buf = ctypes.create_string_buffer(n)
            n = check(L.ps_token_to_piece(self._model, int(token), buf, len(buf), int(special)), f"token {token}")
        piece = buf.raw[:n]
        self._piece_cache[key] = piece
        return piece

    def detokenize(self, ids: Iterable[int], special: bool = False) -> str:
        """Token ids -> text (invalid UTF-8, e.g. a cut-off character, becomes U+FFFD)."""
        return b"".join(self.token_bytes(t, special) for t in ids).decode("utf-8", "replace")

    # ---- evaluation ------------------------------------------------------------
    @property
    def n_past(self) -> int:
        return int(self._live().ps_session_n_past(self._session))

    @property
    def tokens(self) -> list[int]:
        """The ids in the KV cache (a copy)."""
        return list(self._tokens)

    def eval(self, ids: Sequence[int]) -> None:
        """Run ids through the model, appending them to the KV cache."""
        L = self._live()
        arr = _int32_array(ids)
        if arr.size == 0:
            return
        ptr = arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        check(L.ps_session_eval(self._session, ptr, int(arr.size), None), "eval")
        self._tokens.extend(int(t) for t in arr)

    def eval_all(self, ids: Sequence[int]) -> np.ndarray:
        """Like eval(), but return the logits at every position: float32 [n, n_vocab]."""
        L = self._live()
        arr = _int32_array(ids)
        out = np.empty((arr.size, self.n_vocab), dtype=np.float32)
        if arr.size == 0:
            return out
        check(L.ps_session_eval(self._session, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
                                int(arr.size), out.ctypes.data_as(ctypes.POINTER(ctypes.c_float))), "eval")
        self._tokens.extend(int(t) for t in arr)
        return out

    def logits(self) -> np.ndarray:
        """Logits of the last evaluated position: a float32 [n_vocab] copy."""
        L = self._live()
        ptr = L.ps_session_logits(self._session)
        if not ptr:
            raise ProSparseError("no logits yet: eval() some tokens first", _lib.PS_ERR_ARG)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def reset(self) -> None:
        """Empty the KV cache and the per-layer counters."""
        self._live().ps_session_reset(self._session)
        self._tokens.clear()

    def truncate(self, n_keep: int) -> None:
        """Drop the KV cache past position n_keep."""
        check(self._live().ps_session_truncate(self._session, int(n_keep)), "truncate")
        del self._tokens[int(n_keep):]

    # ---- modes and counters ------------------------------------------------------
    @property
    def mode(self) -> str:
        return MODE_NAMES.get(int(self._live().ps_session_get_mode(self._session)), "?")

    def set_mode(self, mode: str) -> None:
        """Switch the engine mode (dense, sparse, predict, threshold) for what follows."""
        check(self._live().ps_session_set_mode(self._session, parse_mode(mode)), f"mode {mode}")

    def supports_mode(self, mode: str) -> bool:
        """Whether this file can run in `mode` (the engine's own check, as set_mode's)."""
        return self._live().ps_model_check_mode(self._model, parse_mode(mode)) == 0

    def supported_modes(self) -> list[str]:
        """The engine modes this file can run, dense first."""
        return [name for name in MODES if self.supports_mode(name)]

    def set_measure(self, on: bool) -> None:
        """Measure option: in predict mode also compute every layer's dense gate so
        stats() reports predictor recall (slower; never time a measured run).
        Kept across set_mode and reset."""
        check(self._live().ps_session_set_measure(self._session, int(bool(on))), "measure")

    def read_bandwidth(self, reps: int = 3) -> float:
        """Read bandwidth in GB/s of this model's weights as the engine holds them
        (its load-time copies), streamed with the session's threads: the memory a
        decode step reads. ProSparseError when the copies are too small to leave the
        caches (under 64 MiB) or the model has none."""
        gbs = self._live().ps_model_read_bandwidth(self._model, self.threads, int(reps))
        if gbs < 0:
            raise _lib.fail(int(gbs), "read bandwidth")
        return gbs

    def stats(self) -> dict:
        """Per-layer counters since the last reset: measured sparsity (share of FFN
        neurons whose activation was zero), the share the predictor/threshold kept,
        and predictor recall where it was measured."""
        L = self._live()
        n = self.info.n_layer
        raw = (_lib.ps_layer_stats * max(n, 1))()
        n = check(L.ps_session_layer_stats(self._session, raw, n), "stats")
        layers = []
        for i in range(min(n, self.info.n_layer)):
            s = raw[i]
            total = s.neurons_total
            layers.append({
                "layer": i,
                "tokens": s.tokens,
                "neurons_total": total,
                "neurons_active": s.neurons_active,
                "neurons_predicted": s.neurons_predicted,
                "sparsity": 1.0 - s.neurons_active / total if total else None,
                "predicted_share": s.neurons_predicted / total if total else None,
                "recall": s.recall_hits / s.recall_total if s.recall_total else None,
            })
        total = sum(x["neurons_total"] for x in layers)
        active = sum(x["neurons_active"] for x in layers)
        predicted = sum(x["neurons_predicted"] for x in layers)
        hits = sum(raw[i].recall_hits for i in range(len(layers)))
        truth = sum(raw[i].recall_total for i in range(len(layers)))
        return {
            "mode": self.mode,
            "n_past": self.n_past,
            "tokens": layers[0]["tokens"] if layers else 0,
            "sparsity": 1.0 - active / total if total else None,
            "predicted_share": predicted / total if total else None,
            "recall": hits / truth if truth else None,
            "layers": layers,
        }

    # ---- generation ----------------------------------------------------------------
    def _prepare(self, ids: list[int]) -> int:
        """Make the KV cache hold ids[:-1] at least, reusing the common prefix with
        what it holds now; evaluate the rest so logits() belong to ids[-1].
        Returns the number of prompt tokens reused."""
        if not ids:
            raise ProSparseError("empty prompt", _lib.PS_ERR_ARG)
        if len(ids) >= self.n_ctx:
            raise ProSparseError(f"prompt of {len(ids)} tokens does not fit the context of {self.n_ctx}",
                                 _lib.PS_ERR_CONTEXT)
        keep = 0
        for a, b in zip(self._tokens, ids):
            if a != b:
                break
            keep += 1
        keep = min(keep, len(ids) - 1)  # always evaluate at least one token to get fresh logits
        if keep == 0:
            self.reset()
        elif keep < len(self._tokens):
            self.truncate(keep)
        self.eval(ids[keep:])
        return keep

    def generate(self, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.8,
                 top_k: int = 40, top_p: float = 0.95, seed: int | None = None,
                 stop: str | Sequence[str] | None = None, add_bos: bool | None = None,
                 special: bool = True) -> Iterator[str]:
        """Stream the continuation of prompt (text or ids) as text pieces.

        Stops at an end-of-generation token, at any of the `stop` strings (not
        included in the output), after max_tokens, or when the context is full.
        Pieces are always whole UTF-8 characters. temperature <= 0 is greedy.
        Text prompts are tokenized with BOS when the file asks for it (add_bos=None)
        and with control tokens recognised (special=True).
        """
        self._live()
        if isinstance(prompt, str):
            ids = self.tokenize(prompt, add_bos=self.add_bos if add_bos is None else add_bos, special=special)
        else:
            ids = [int(t) for t in prompt]
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if s]
        return self._generate(ids, int(max_tokens), float(temperature), int(top_k), float(top_p), seed, stops)

    def _generate(self, ids, max_tokens, temperature, top_k, top_p, seed, stops) -> Iterator[str]:
        L = self._lib
        stats = GenerationStats()
        self.last_generation = stats
        t0 = time.perf_counter()
        stats.n_cached = self._prepare(ids)
        stats.n_prompt = len(ids) - stats.n_cached
        stats.prompt_s = time.perf_counter() - t0

        sp = L.ps_sampler_default_params()
        sp.temperature = temperature
        sp.top_k = top_k
        sp.top_p = top_p
        sp.seed = (int.from_bytes(os.urandom(8), "little") if seed is None else int(seed)) & (2**64 - 1)
        sampler = L.ps_sampler_new(ctypes.byref(sp))
        if not sampler:
            raise fail(_lib.PS_ERR_ARG, "sampler")
        text = TextStream(stops)
        t0 = time.perf_counter()
        try:
            stats.stop_reason = "length"
            for _ in range(max_tokens):
                ptr = L.ps_session_logits(self._session)
                tok = int(L.ps_sampler_sample(sampler, ptr, self.n_vocab))
                check(tok, "sample")
                stats.n_generated += 1
                stats.tokens.append(tok)
                if self.is_eog(tok):
                    stats.stop_reason = "eog"
                    break
                out = text.push(self.token_bytes(tok, special=False))
                if out:
                    yield out
                if text.stopped:
                    stats.stop_reason = "stop"
                    break
                if self.n_past >= self.n_ctx:
                    stats.stop_reason = "context"
                    break
                self.eval([tok])
            out = text.flush()
            if out:
                yield out
        finally:
            L.ps_sampler_free(sampler)
            stats.generate_s = time.perf_counter() - t0

    def chat(self, messages: list[dict], stream: bool = False, max_tokens: int = 256,
             temperature: float = 0.2, top_k: int = 40, top_p: float = 0.9, seed: int | None = None,
             stop: str | Sequence[str] | None = None):
        """Answer a conversation rendered with the file's chat template.

        messages: [{"role": "system"|"user"|"assistant", "content": str}, ...].
        Returns the reply as a str, or an iterator of pieces with stream=True.
        Defaults follow SmolLM2's recommended sampling (temperature 0.2, top-p 0.9).
        """
        from .chat import render_chat

        prompt = render_chat(self, messages)
        ids = self.tokenize_prompt(prompt)
        it = self._generate(ids, int(max_tokens), float(temperature), int(top_k), float(top_p), seed,
                            [stop] if isinstance(stop, str) else list(stop or []))
        return it if stream else "".join(it)

    def tokenize_prompt(self, text: str) -> list[int]:
        """Tokenize a rendered chat prompt: control tokens recognised, BOS added only
        when the file asks for one and the template did not already write it."""
        bos = self.token_bos
        ids = self.tokenize(text, add_bos=False, special=True)
        if self.add_bos and bos >= 0 and (not ids or ids[0] != bos):
            ids = [bos] + ids
        return ids


class TextStream:
    """Token bytes in, text out, for streaming: never half a UTF-8 character, and
    never text that might still turn out to be the start of a stop string.

        push(piece_bytes) -> text safe to show now (may be "")
        flush()           -> what is left at the end (an unfinished character becomes U+FFFD)
        stopped           -> a stop string was seen; nothing from it on is ever returned
    """

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self.stopped = False
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._held = ""

    def push(self, data: bytes) -> str:
        if self.stopped:
            return ""
        return self._emit(self._held + self._decoder.decode(data))

    def flush(self) -> str:
        if self.stopped:
            return ""
        out = self._emit(self._held + self._decoder.decode(b"", final=True))
        held, self._held = self._held, ""
        return out + held

    def _emit(self, text: str) -> str:
        first = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if first >= 0:
            self.stopped, self._held = True, ""
            return text[:first]
        hold = 0  # longest tail that is a proper prefix of some stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), hold, -1):
                if text.endswith(s[:k]):
                    hold = k
                    break
        self._held = text[len(text) - hold:] if hold else ""
        return text[:len(text) - hold]
