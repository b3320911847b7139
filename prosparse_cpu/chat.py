"""Chat prompts: the file's tokenizer.chat_template rendered with jinja2.

Templates are the Hugging Face kind (Jinja, as in tokenizer_config.json) and
render as transformers' apply_chat_template renders them: the same jinja2
settings (immutable sandbox, trim_blocks, lstrip_blocks, loop controls, the
`{% generation %}` tag, which keeps its body) and the same variables
(messages with their None fields dropped, tools and documents as None unless
given, add_generation_prompt, bos_token, eos_token, raise_exception(),
strftime_now(), a JSON tojson filter, a namespace() without underscore names).
Templates come from the model file, hence the sandbox.
"""

from __future__ import annotations

import json
import warnings
from datetime import datetime
from functools import lru_cache

import jinja2
import jinja2.ext
import jinja2.nodes
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
# Gemma's turn format (its instruction-tuned models' template: a system message goes at
# the start of the first user turn), for Gemma files that carry no template of their own
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


class GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}`: transformers uses it to find the
    assistant's tokens for training masks; in a prompt it is just its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        # A call block, as transformers' own tag is: the body's assignments stay inside it.
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    @staticmethod
    def _body(caller):
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, which reach Python internals."""

    def __init__(*args, **kwargs):  # noqa: N805 -- jinja2's own signature, so namespace(self=1) works
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r}: underscore names are not allowed")


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # jinja2's own tojson escapes HTML characters; chat templates want plain JSON.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=8)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["namespace"] = _Namespace
    return env.from_string(template)


def render_template(template: str, messages: list[dict], bos_token: str = "", eos_token: str = "",
                    add_generation_prompt: bool = True, tools: list | None = None,
                    documents: list | None = None, **variables) -> str:
    """Render a Hugging Face chat template; template errors become ProSparseError.

    `variables` are further names the template may read (e.g. enable_thinking)."""
    plain = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or ("content" not in m and "tool_calls" not in m):
            raise ProSparseError(f"chat message needs 'role' and 'content': {m!r}")
        # As transformers does: a None field is left out (templates test for presence, not for None).
        plain.append({k: v for k, v in m.items() if v is not None})
    try:
        return _compile(template).render(messages=plain, tools=tools, documents=documents,
                                         add_generation_prompt=add_generation_prompt,
                                         **{"bos_token": bos_token, "eos_token": eos_token, **variables})
    except jinja2.exceptions.TemplateError as e:
        raise ProSparseError(f"chat template: {e}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError) as e:
        # a template's own bug, e.g. iterating `tools` that is None, as a one-line error
        raise ProSparseError(f"chat template: {type(e).__name__}: {e}") from None


def _gemma_turns(model) -> bool:
    """A Gemma vocabulary: <start_of_turn> and <end_of_turn> are single control tokens."""
    if model.info.arch != "gemma3" and model.meta_str("prosparse.base_architecture") != "gemma3":
        return False
    return len(model.tokenize("<start_of_turn><end_of_turn>", add_bos=False, special=True)) == 2


def render_chat(model, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Render messages with model's chat template (for a Gemma 3 file without one, Gemma's
    turn format; otherwise ChatML, with a warning, if it has none)."""
    template = model.meta_str("tokenizer.chat_template")
    if not template and _gemma_turns(model):
        template = GEMMA_TEMPLATE   # the format its vocabulary's turn markers are for
    elif not template:
        warnings.warn(f"{model.path} has no tokenizer.chat_template; using ChatML", stacklevel=3)
        template = CHATML_TEMPLATE

    def text_of(tok: int) -> str:
        return model.detokenize([tok], special=True) if tok >= 0 else ""

    return render_template(template, messages, bos_token=text_of(model.token_bos),
                           eos_token=text_of(model.token_eos), add_generation_prompt=add_generation_prompt)
