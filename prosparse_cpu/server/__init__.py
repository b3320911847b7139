"""`prosparse serve`: an OpenAI-compatible HTTP server over one loaded model.

    schemas   request bodies (pydantic), their checks, OpenAI-style errors
    pool      sessions sharing the model, the queue in front of them, a job
              that runs one generation in a worker thread
    sse       server-sent events: the streaming response and its chunks
    app       the FastAPI application: routes, auth, body limit, error pages

Needs the `[server]` extra (FastAPI + uvicorn).
"""

from __future__ import annotations


def serve(path: str, host: str = "127.0.0.1", port: int = 8080, mode: str = "dense", threads: int = 2,
          parallel: int = 1, n_ctx: int = 2048, api_key: str | None = None, copy_weights: bool = True,
          max_body: int = 1 << 20, log_level: str = "info", cache_type: str = "f16",
          activation_threshold: float = 0.0) -> None:
    """Load the model, then serve until SIGINT/SIGTERM."""
    import uvicorn

    from .app import Server, create_app
    from .pool import Pool

    pool = Pool.open(path, parallel=parallel, threads=threads, n_ctx=n_ctx, mode=mode, copy_weights=copy_weights,
                     cache_type=cache_type, activation_threshold=activation_threshold)
    try:
        app = create_app(pool, api_key=api_key, max_body=max_body)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2,
                                timeout_keep_alive=5)
        Server(config, pool).run()
    finally:
        pool.close()

