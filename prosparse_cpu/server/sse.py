"""Server-sent events: `data: {json}\\n\\n` per chunk, `data: [DONE]` last.

SSEResponse cancels its job however the response ends (finished, client
gone, server shutting down), so a client that hangs up mid-stream stops its
generation after the current token and its session goes back to the pool.
"""

from __future__ import annotations

import json
from typing import AsyncIterator

from starlette.responses import StreamingResponse

DONE = "data: [DONE]\n\n"


def event(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class SSEResponse(StreamingResponse):
    def __init__(self, body: AsyncIterator[str], job):
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.job = job

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.job.cancel()
