"""Request bodies of the OpenAI endpoints, their checks, and the error shape.

Bodies are parsed by hand (size limit, JSON) and then validated by the
pydantic models below in strict mode: a string where a number belongs is an
error, not a conversion. Unknown fields are ignored, as OpenAI's clients send
some we have no use for. Every failure is an APIError, which the app turns
into {"error": {"message", "type", "param", "code"}} with its HTTP status.
"""

from __future__ import annotations

import json
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class APIError(Exception):
    """An error answered as OpenAI does: status, one-line message, type, code."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data):
        # OpenAI takes `"temperature": null` (as many clients send) for "the default"
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


# ---- shared sampling fields ------------------------------------------------------
class StreamOptions(_Strict):
    include_usage: bool = False


class _Sampling(_Strict):
    model: str | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None   # the newer name of max_tokens
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, ge=0.0, le=1.0)
    top_k: int = Field(0, ge=0)                # an extension (llama.cpp's); 0 turns it off
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    logprobs: Union[bool, int, None] = None
    echo: bool = False
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    tools: list | None = None

    def stops(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 16:
            raise APIError(400, f"stop: at most 16 strings, got {len(stops)}", param="stop")
        return [s for s in stops if s]

    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def check_supported(self) -> None:
        if self.n != 1:
            raise APIError(400, f"n: only 1 choice is supported, got {self.n}", param="n")
        if self.logprobs:
            raise APIError(400, "logprobs are not supported", param="logprobs")
        for name in ("presence_penalty", "frequency_penalty"):
            if getattr(self, name):
                raise APIError(400, f"{name} is not supported (send 0 or leave it out)", param=name)
        if self.tools:
            raise APIError(400, "tools are not supported", param="tools")
        if self.echo:
            raise APIError(400, "echo is not supported", param="echo")
        if self.seed is not None and not (-(2**63) <= self.seed < 2**64):
            raise APIError(400, "seed: out of the 64-bit range", param="seed")

    def token_budget(self, n_prompt: int, n_ctx: int, default: int | None) -> int:
        """max_tokens checked against the context; the prompt checked to fit it."""
        if n_prompt >= n_ctx:
            over = n_prompt - (n_ctx - 1)
            raise APIError(400, f"the prompt is {n_prompt} tokens, {over} too many for the context of {n_ctx} "
                                f"tokens (which must keep one for the reply)", code="context_length_exceeded",
                           param="messages" if isinstance(self, ChatRequest) else "prompt")
        n = self.max_tokens if self.max_tokens is not None else self.max_completion_tokens
        if n is None:
            n = default if default is not None else n_ctx - n_prompt
        if n < 1:
            raise APIError(400, f"max_tokens must be at least 1, got {n}", param="max_tokens", code="invalid_value")
        if n > n_ctx:
            raise APIError(400, f"max_tokens {n} is more than the context of {n_ctx} tokens", param="max_tokens",
                           code="invalid_value")
        return n


# ---- /v1/chat/completions ------------------------------------------------------------
class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)

    def chat_messages(self) -> list[dict]:
        # "developer" is OpenAI's newer name for "system"; templates know only the latter.
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


# ---- /v1/completions ---------------------------------------------------------------------
class CompletionRequest(_Sampling):
    prompt: Union[str, list[str], list[int]]

    def prompt_value(self) -> str | list[int]:
        p = self.prompt
        if isinstance(p, list) and p and isinstance(p[0], str):
            if len(p) != 1:
                raise APIError(400, f"prompt: only one prompt per request is supported, got {len(p)}", param="prompt")
            return p[0]
        if isinstance(p, list) and not p:
            raise APIError(400, "prompt: empty", param="prompt")
        return p


# ---- parsing ---------------------------------------------------------------------------------
def parse(model_cls: type[_Sampling], raw: bytes) -> _Sampling:
    """JSON bytes -> a validated request, or APIError(400)."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the body must be a JSON object, got {type(data).__name__}")
    try:
        req = model_cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "body"
        missing = err["type"] == "missing"
        raise APIError(400, f"{where}: {'missing field' if missing else err['msg']}", param=where,
                       code="missing_field" if missing else "invalid_value") from None
    req.check_supported()
    return req
