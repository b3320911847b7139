"""Chat templates render as transformers renders them.

Real templates (tests/data/chat_templates/, and every *.jinja in
$PROSPARSE_CHAT_TEMPLATES when set) go through prosparse_cpu.chat and through
transformers' own renderer with the same conversations: plain turns, a
system prompt, several turns, a tool call, with and without the generation
prompt, with and without bos/eos text. Where transformers renders, ours must
give the same text; where it fails (a template refusing a system role, a
tool-use template without tools), ours must fail too, with a ProSparseError.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

from prosparse_cpu._lib import ProSparseError
from prosparse_cpu.chat import render_template

DATA = Path(__file__).parent / "data" / "chat_templates"


def _template_files() -> list[Path]:
    files = sorted(DATA.glob("*.jinja"))
    extra = os.environ.get("PROSPARSE_CHAT_TEMPLATES")
    if extra:
        files += sorted(Path(extra).glob("*.jinja"))
    return files


SYSTEM = {"role": "system", "content": "You are terse."}
USER1 = {"role": "user", "content": "Hi there!"}
ASSISTANT1 = {"role": "assistant", "content": "Hello. How can I help?"}
USER2 = {"role": "user", "content": 'What is 2+2? <b>&</b> "quotes" ünïcödé 😀'}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}},
                   "required": ["city"]}}}]
CALL = {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich"}}}]}
RESULT = {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": '{"temp": 21}'}

CONVERSATIONS = {
    "user": ([USER1], None),
    "system+user": ([SYSTEM, USER1], None),
    "multi-turn": ([SYSTEM, USER1, ASSISTANT1, USER2], None),
    "multi-turn, no system": ([USER1, ASSISTANT1, USER2], None),
    "ends with assistant": ([USER1, ASSISTANT1], None),
    "tool call": ([SYSTEM, USER1, CALL, RESULT], TOOLS),
}
CASES = [(name, agp, special) for name in CONVERSATIONS for agp in (True, False)
         for special in (("<s>", "</s>"), ("", ""))]


def _transformers_render(template, messages, tools, agp, bos, eos):
    # What tokenizer.apply_chat_template does before tokenizing: drop None fields, then render.
    from transformers.utils.chat_template_utils import _normalize_chat_messages, render_jinja_template

    out, _ = render_jinja_template([_normalize_chat_messages(messages)], tools=tools, chat_template=template,
                                   add_generation_prompt=agp, bos_token=bos, eos_token=eos)
    return out[0]


@pytest.mark.parametrize("path", _template_files(), ids=lambda p: p.stem)
def test_real_template_renders_as_transformers(path):
    pytest.importorskip("transformers")
    template = path.read_text("utf-8")
    rendered = 0
    for name, agp, (bos, eos) in CASES:
        messages, tools = CONVERSATIONS[name]
        try:
            want = _transformers_render(template, copy.deepcopy(messages), tools, agp, bos, eos)
        except Exception as e:  # noqa: BLE001 -- whatever transformers raises, ours must refuse too
            with pytest.raises(ProSparseError):
                render_template(template, copy.deepcopy(messages), bos_token=bos, eos_token=eos,
                                add_generation_prompt=agp, tools=tools)
            print(f"{path.stem} [{name}, agp={agp}]: transformers fails too ({type(e).__name__})")
            continue
        got = render_template(template, copy.deepcopy(messages), bos_token=bos, eos_token=eos,
                              add_generation_prompt=agp, tools=tools)
        assert got == want, f"{path.stem} [{name}, add_generation_prompt={agp}, bos={bos!r}]"
        rendered += 1
    if path.parent == DATA:  # every template kept here renders some conversation (no vacuous pass)
        assert rendered >= len(CASES) // 2, f"{path.stem}: transformers rendered only {rendered} of {len(CASES)}"


def test_vendored_set_is_there():
    assert len(list(DATA.glob("*.jinja"))) >= 20


# ---- the pieces of transformers' environment, one by one ---------------------------------------------
def test_generation_tag_renders_its_body():
    tpl = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{% set x = 'in' %}"
           "[{{ m.content }}|{{ x }}]{% endgeneration %}{% else %}<{{ m.content }}>{% endif %}{% endfor %}"
           "{{ x is defined }}")
    out = render_template(tpl, [USER1, ASSISTANT1])
    assert out == "<Hi there!>[Hello. How can I help?|in]False"   # the body's assignment stays in it


def test_generation_tag_unclosed_is_an_error():
    with pytest.raises(ProSparseError, match="chat template"):
        render_template("{% generation %}x", [USER1])


def test_tools_and_documents_are_none_unless_given():
    tpl = "{{ tools is none }} {{ documents is none }}{% if tools %} {{ tools | tojson }}{% endif %}"
    assert render_template(tpl, [USER1]) == "True True"
    assert render_template(tpl, [USER1], tools=[{"a": "ü"}]) == 'False True [{"a": "ü"}]'
    with pytest.raises(ProSparseError, match="TypeError"):   # a template iterating tools=None, one line
        render_template("{% for t in tools %}{% endfor %}", [USER1])


def test_none_fields_are_dropped_and_variables_pass_through():
    tpl = "{{ messages[0].content is defined }} {{ messages[0].tool_calls | length }} {{ enable_thinking }}"
    assert render_template(tpl, [CALL], enable_thinking=False) == "False 1 False"


def test_tojson_options_and_no_html_escaping():
    tpl = "{{ messages[0] | tojson(indent=2, separators=(',', ': '), sort_keys=True) }}|{{ '<&>' | tojson }}"
    out = render_template(tpl, [{"role": "user", "content": "x"}])
    assert out == '{\n  "content": "x",\n  "role": "user"\n}|"<&>"'


def test_namespace_and_loop_controls():
    tpl = ("{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
           "{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}")
    assert render_template(tpl, [USER1] * 5) == "2"
    with pytest.raises(ProSparseError, match="underscore"):
        render_template("{% set ns = namespace(_x=1) %}", [USER1])
    with pytest.raises(ProSparseError, match="underscore"):
        render_template("{% set ns = namespace() %}{% set ns.__class__ = 1 %}", [USER1])


def test_strftime_now_and_raise_exception():
    import datetime

    year = str(datetime.date.today().year)
    assert render_template("{{ strftime_now('%Y') }}", [USER1]) in (year, str(int(year) + 1))
    with pytest.raises(ProSparseError, match="no system"):
        render_template("{{ raise_exception('no system') }}", [USER1])
