"""Chat prompts: the file's tokenizer.chat_template rendered with jinja2.

Templates are the Hugging Face kind (Jinja, as in tokenizer_config.json). They
come from the model file, so they run in jinja2's immutable sandbox with the
variables transformers provides: messages, add_generation_prompt, bos_token,
eos_token, raise_exception(), strftime_now() and a JSON-style tojson filter.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ._lib import ProSparseError

# Used only when a file carries no template (said in a warning): ChatML, the
# format of SmolLM2, Qwen and many small instruct models.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    # jinja2's own tojson escapes HTML characters; chat templates want plain JSON.
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_template(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "",
                    add_generation_prompt: bool = True) -> str:
    """Render a Hugging Face chat template; template errors become ProSparseError."""
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ProSparseError(f"chat message needs 'role' and 'content': {m!r}")
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=bos_token, eos_token=eos_token)
    except jinja2.exceptions.TemplateError as e:
        raise ProSparseError(f"chat template: {e}") from None


def render_chat(model, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render messages with model's chat template (ChatML, with a warning, if it has none)."""
    template = model.meta_str("tokenizer.chat_template")
    if not template:
        warnings.warn(f"{model.path} has no tokenizer.chat_template; using ChatML", stacklevel=3)
        template = CHATML_TEMPLATE

    def text_of(tok: int) -> str:
        return model.detokenize([tok], special=True) if tok >= 0 else ""

    return render_template(template, messages, bos_token=text_of(model.token_bos),
                           eos_token=text_of(model.token_eos), add_generation_prompt=add_generation_prompt)
