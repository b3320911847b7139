"""Sessions over one loaded model, the queue in front of them, and jobs.

    Pool.open(path, parallel=N)   one ps_model, N sessions (threads split among them)
    await pool.acquire(ids)       a free session, the one whose KV cache shares the
                                  longest prefix with ids; waits in FIFO order when
                                  all are busy
    Job(pool, slot, ids, ...)     one generation in a worker thread; pieces come back
                                  on an asyncio queue; cancel() stops it after the
                                  current token, and the thread hands the session
                                  back to the pool when it ends

A session keeps its KV cache between requests: Model._prepare truncates it to
the common prefix with the next prompt and evaluates only the rest.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

from ..model import Model, parse_mode
from .schemas import APIError


SHUTTING_DOWN = APIError(503, "the server is shutting down", type="server_error", code="shutting_down")


class Slot(Model):
    """A second (third, ...) session over the ps_model of an open Model.

    Everything Model does with its session (generate, chat, _prepare, tokenize)
    works; close() frees only the session. The base Model must outlive it."""

    def __init__(self, base: Model, threads: int, n_ctx: int, mode: str):
        self._session = None
        self._base = base
        self.path, self._lib, self.info = base.path, base._lib, base.info
        self.activation_threshold = base.activation_threshold
        self._model = base._model
        self._piece_cache = base._piece_cache
        self.cache_type = base.cache_type
        self._open_session(threads, n_ctx, base.n_batch, parse_mode(mode))

    def close(self) -> None:
        if self._session is not None and self._lib is not None:
            self._lib.ps_session_free(self._session)
        self._session = None
        self._model = None


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class Pool:
    """N sessions and the FIFO of requests waiting for one (asyncio side only)."""

    def __init__(self, model: Model, slots: list[Model], max_waiting: int = 256):
        self.model = model              # tokenizer, chat template, metadata
        self.slots = slots              # slots[0] is model itself
        self.free = list(slots)
        self.waiters: deque[asyncio.Future] = deque()
        self.max_waiting = max_waiting
        self.jobs: set[Job] = set()     # running, for shutdown
        self.closing = False

    @classmethod
    def open(cls, path: str, parallel: int = 1, threads: int = 2, n_ctx: int = 2048, mode: str = "dense",
             copy_weights: bool = True, cache_type: str = "f16", activation_threshold: float = 0.0) -> "Pool":
        per = max(1, int(threads) // int(parallel))
        model = Model(path, threads=per, n_ctx=n_ctx, mode=mode, copy_weights=copy_weights, cache_type=cache_type,
                      activation_threshold=activation_threshold)
        slots: list[Model] = [model]
        try:
            for _ in range(int(parallel) - 1):
                slots.append(Slot(model, per, n_ctx, mode))
        except BaseException:
            for s in reversed(slots):
                s.close()
            raise
        return cls(model, slots)

    @property
    def n_ctx(self) -> int:
        return self.model.n_ctx

    @property
    def threads_per_slot(self) -> int:
        return self.model.threads

    async def acquire(self, ids: list[int]) -> Model:
        if self.closing:
            raise SHUTTING_DOWN
        if self.free:
            best = max(self.free, key=lambda s: common_prefix(s._tokens, ids))
            self.free.remove(best)
            return best
        if len(self.waiters) >= self.max_waiting:
            raise APIError(503, f"server busy: {len(self.waiters)} requests already waiting", type="server_error",
                           code="server_busy")
        fut = asyncio.get_running_loop().create_future()
        self.waiters.append(fut)
        try:
            return await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release(fut.result())   # handed over just as the client left
            else:
                try:
                    self.waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self, slot: Model) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(slot)
                return
        self.free.append(slot)

    def shutdown(self) -> None:
        """SIGTERM (on the event loop): refuse new work, fail the waiting, stop the running."""
        self.closing = True
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(SHUTTING_DOWN)
        for job in list(self.jobs):
            job.cancel()

    def cancel_all(self, timeout: float = 5.0) -> None:
        """Stop every running job and wait for its thread (shutdown)."""
        jobs = list(self.jobs)
        for job in jobs:
            job.cancel()
        for job in jobs:
            job.thread.join(timeout)

    def close(self) -> None:
        self.cancel_all()
        if any(job.thread.is_alive() for job in self.jobs):
            return  # a thread is still in the engine: leave the memory to the OS
        for s in reversed(self.slots):
            s.close()


@dataclass
class Result:
    """How a generation ended (OpenAI's names)."""

    finish_reason: str       # "stop" or "length"
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int

    def usage(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens,
                "prompt_tokens_details": {"cached_tokens": self.cached_tokens}}


class Job:
    """One generation on one acquired session, run in a worker thread.

    The thread puts ("piece", str), then ("done", Result), ("cancelled", None) or
    ("error", Exception) on self.queue, and releases the session to the pool
    last of all."""

    def __init__(self, pool: Pool, slot: Model, ids: list[int], max_tokens: int, temperature: float,
                 top_k: int, top_p: float, seed: int | None, stops: list[str]):
        self.pool, self.slot, self.ids = pool, slot, ids
        self.args = (ids, max_tokens, temperature, top_k, top_p, seed, stops)
        self.queue: asyncio.Queue = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self._cancel = threading.Event()
        self.thread = threading.Thread(target=self._run, name="prosparse-gen", daemon=True)

    def start(self) -> "Job":
        self.pool.jobs.add(self)
        self.thread.start()
        return self

    def cancel(self) -> None:
        self._cancel.set()

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening
            pass

    def _run(self) -> None:
        try:
            gen = self.slot._generate(*self.args)
            try:
                for piece in gen:
                    if self._cancel.is_set():
                        break
                    self._put(("piece", piece))
            finally:
                gen.close()
            if self._cancel.is_set():
                self._put(("cancelled", None))
                return
            st = self.slot.last_generation
            eog = st.stop_reason == "eog"
            self._put(("done", Result(finish_reason="stop" if st.stop_reason in ("eog", "stop") else "length",
                                      prompt_tokens=len(self.ids), cached_tokens=st.n_cached,
                                      completion_tokens=st.n_generated - (1 if eog else 0))))
        except Exception as e:  # noqa: BLE001 - reported to the client as a 500
            self._put(("error", e))
        finally:
            def done():
                self.pool.jobs.discard(self)
                self.pool.release(self.slot)
            try:
                self.loop.call_soon_threadsafe(done)
            except RuntimeError:
                pass
