"""The FastAPI application: OpenAI's endpoints over a Pool of sessions.

    POST /v1/chat/completions   the file's chat template, then generation
    POST /v1/completions        plain continuation of a prompt (text or ids)
    GET  /v1/models             the one loaded model
    GET  /health                liveness and how busy the sessions are
    GET  /                      a chat page (static, in the package)

Every error is OpenAI-style JSON with its 4xx/5xx status; nothing answers
with a traceback. With an API key, /v1/* needs `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources

import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .._lib import ProSparseError
from ..chat import render_chat
from .pool import SHUTTING_DOWN, Job, Pool, Result
from .schemas import APIError, ChatRequest, CompletionRequest, parse
from .sse import DONE, SSEResponse, event

log = logging.getLogger("prosparse.server")


def model_id(path: str) -> str:
    name = os.path.basename(path)
    return name[:-5] if name.lower().endswith(".gguf") else name


def create_app(pool: Pool, api_key: str | None = None, max_body: int = 1 << 20) -> FastAPI:
    model = pool.model
    mid = model_id(model.path)
    started = int(time.time())
    mode = model.mode

    @asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(pool.cancel_all)   # shutdown: stop generations, wait for their threads

    app = FastAPI(title="prosparse-cpu", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    # ---- errors ---------------------------------------------------------------------
    @app.exception_handler(APIError)
    async def api_error(request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(APIError(exc.status_code, str(exc.detail), code=kind).body(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, exc: RequestValidationError):
        return JSONResponse(APIError(400, str(exc)).body(), status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request, exc: Exception):
        log.error("internal error on %s: %r", request.url.path, exc)
        return JSONResponse(APIError(500, "internal server error", type="server_error").body(), status_code=500)

    # ---- request plumbing ---------------------------------------------------------------
    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise APIError(401, "missing or wrong API key (send `Authorization: Bearer KEY`)",
                           code="invalid_api_key")

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                raise APIError(400, "bad Content-Length header")
            if int(declared) > max_body:
                raise APIError(413, f"the body is {declared} bytes; the limit is {max_body}", code="body_too_large")
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > max_body:
                raise APIError(413, f"the body is over the limit of {max_body} bytes", code="body_too_large")
            chunks.append(chunk)
        return b"".join(chunks)

    async def start_job(req, ids: list[int], max_tokens: int) -> Job:
        slot = await pool.acquire(ids)
        try:
            job = Job(pool, slot, ids, max_tokens, req.temperature, req.top_k, req.top_p, req.seed, req.stops())
        except BaseException:
            pool.release(slot)
            raise
        return job.start()

    async def collect(request: Request, job: Job) -> tuple[str, Result]:
        """Wait for a whole answer; a client that hangs up cancels it."""
        async def watch():
            while (await request.receive())["type"] != "http.disconnect":
                pass
            job.cancel()

        watcher = asyncio.create_task(watch())
        pieces = []
        try:
            while True:
                kind, value = await job.queue.get()
                if kind == "piece":
                    pieces.append(value)
                elif kind == "done":
                    return "".join(pieces), value
                elif kind == "cancelled":
                    raise SHUTTING_DOWN
                else:
                    raise value
        finally:
            watcher.cancel()
            job.cancel()

    def head(kind: str) -> dict:
        return {"id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}",
                "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": int(time.time()), "model": mid, "system_fingerprint": None}

    async def stream(job: Job, kind: str, include_usage: bool):
        base = head(kind)
        base["object"] = "chat.completion.chunk" if kind == "chat" else "text_completion"

        def chunk(choice: dict | None, usage=None) -> str:
            body = dict(base, choices=[choice] if choice else [])
            if include_usage:
                body["usage"] = usage
            return event(body)

        def choice(text: str | None, finish: str | None, role: bool = False) -> dict:
            if kind == "chat":
                delta = {} if text is None else ({"role": "assistant", "content": text} if role else {"content": text})
                return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

        if kind == "chat":
            yield chunk(choice("", None, role=True))
        while True:
            what, value = await job.queue.get()
            if what == "piece":
                yield chunk(choice(value, None))
            elif what == "done":
                yield chunk(choice(None, value.finish_reason))
                if include_usage:
                    yield chunk(None, value.usage())
                break
            elif what == "cancelled":  # the client is gone, or the server is stopping
                yield event(SHUTTING_DOWN.body())
                break
            else:
                log.error("generation failed: %r", value)
                yield event(APIError(500, f"generation failed: {value}", type="server_error").body())
                break
        yield DONE

    async def answer(request: Request, req, ids: list[int], max_tokens: int, kind: str):
        job = await start_job(req, ids, max_tokens)
        if req.stream:
            return SSEResponse(stream(job, kind, req.include_usage()), job)
        text, result = await collect(request, job)
        body = head(kind)
        if kind == "chat":
            body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": text},
                                "logprobs": None, "finish_reason": result.finish_reason}]
        else:
            body["choices"] = [{"index": 0, "text": text, "logprobs": None, "finish_reason": result.finish_reason}]
        body["usage"] = result.usage()
        return JSONResponse(body)

    # ---- routes -----------------------------------------------------------------------------
    @app.post("/v1/chat/completions", dependencies=[Depends(authorize)])
    async def chat_completions(request: Request):
        req = parse(ChatRequest, await read_body(request))
        try:
            prompt = render_chat(model, req.chat_messages())
        except ProSparseError as e:
            raise APIError(400, str(e), param="messages") from None
        ids = await run_in_threadpool(model.tokenize_prompt, prompt)
        return await answer(request, req, ids, req.token_budget(len(ids), pool.n_ctx, default=None), "chat")

    @app.post("/v1/completions", dependencies=[Depends(authorize)])
    async def completions(request: Request):
        req = parse(CompletionRequest, await read_body(request))
        prompt = req.prompt_value()
        if isinstance(prompt, str):
            ids = await run_in_threadpool(model.tokenize, prompt, model.add_bos, True)
            if not ids:
                raise APIError(400, "prompt: empty", param="prompt")
        else:
            bad = [t for t in prompt if not 0 <= t < model.n_vocab]
            if bad:
                raise APIError(400, f"prompt: token id {bad[0]} is outside the vocabulary of {model.n_vocab}",
                               param="prompt")
            ids = list(prompt)
        return await answer(request, req, ids, req.token_budget(len(ids), pool.n_ctx, default=16), "completion")

    @app.get("/v1/models", dependencies=[Depends(authorize)])
    async def models():
        return {"object": "list", "data": [{"id": mid, "object": "model", "created": started,
                                            "owned_by": "prosparse-cpu"}]}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": mid, "sessions": len(pool.slots), "idle": len(pool.free),
                "waiting": len(pool.waiters), "n_ctx": pool.n_ctx, "threads_per_session": pool.threads_per_slot,
                "mode": mode}

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(resources.files(__package__).joinpath("static/index.html").read_text("utf-8"))

    return app


class Server(uvicorn.Server):
    """uvicorn's server, which on SIGINT/SIGTERM first fails the queue and stops
    the generations (their streams end at once with an error event)."""

    def __init__(self, config: uvicorn.Config, pool: Pool):
        super().__init__(config)
        self.pool = pool

    def handle_exit(self, sig, frame) -> None:
        try:
            asyncio.get_running_loop().call_soon_threadsafe(self.pool.shutdown)
        except RuntimeError:  # no loop running (yet): nothing to stop
            pass
        super().handle_exit(sig, frame)
