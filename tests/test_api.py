"""The Python API (DESIGN.md contract) on tiny models (support/gguf_files.py), and on SmolLM2 (`real`)."""

from __future__ import annotations

import numpy as np
import pytest

from prosparse_cpu import Model, ProSparseError
from prosparse_cpu.chat import CHATML_TEMPLATE, render_chat, render_template
from prosparse_cpu.model import TextStream
from support.gguf_files import write_gguf, write_tiny_llama
from support.hf_models import make_hf_llama
from support.vocab import token_id

TEXT = "hello world!\n\tTabs,   runs of spaces; digits 12345; ünïcödé, 日本語, emoji 😀👍🏽."


@pytest.fixture
def tiny(tiny_path):
    with Model(tiny_path, threads=2, n_ctx=64) as m:
        yield m


@pytest.fixture
def succ(successor_path):
    with Model(successor_path, threads=1, n_ctx=64) as m:
        yield m


# ---- loading and metadata --------------------------------------------------------
def test_info(tiny):
    i = tiny.info
    assert (i.arch, i.n_layer, i.n_embd, i.n_ff, i.n_head, i.n_head_kv, i.head_dim) == ("llama", 2, 32, 64, 4, 2, 8)
    assert i.n_vocab == tiny.n_vocab == 265
    assert i.weight_type_name == "F32"
    assert not i.tied_output
    assert tiny.meta_str("general.name") == "tiny-test"
    assert tiny.meta_str("no.such.key") is None
    assert (tiny.token_bos, tiny.token_eos) == (1, 2)
    assert tiny.is_eog(2) and not tiny.is_eog(token_id(b"A"))


# ---- tokenizer -----------------------------------------------------------------------
def test_tokenize_round_trip(tiny):
    ids = tiny.tokenize(TEXT, add_bos=False)
    assert all(isinstance(t, int) for t in ids)
    assert tiny.detokenize(ids) == TEXT
    assert tiny.tokenize("hello", add_bos=False) == [tiny.tokenize("hello", add_bos=False)[0]]  # one merged token
    assert tiny.tokenize("hi", add_bos=True)[0] == tiny.token_bos


def test_special_tokens(tiny):
    assert tiny.tokenize("<|im_start|>", add_bos=False, special=True) == [1]
    plain = tiny.tokenize("<|im_start|>", add_bos=False, special=False)
    assert len(plain) > 1 and tiny.detokenize(plain) == "<|im_start|>"
    assert tiny.detokenize([1], special=True) == "<|im_start|>"
    assert tiny.detokenize([1], special=False) == ""


def test_partial_utf8_token_bytes(tiny):
    ids = tiny.tokenize("😀", add_bos=False)
    assert ids[0] == token_id(b"\xf0\x9f") and len(ids) == 3  # the emoji is split over tokens
    assert tiny.token_bytes(ids[0]) == b"\xf0\x9f"
    assert tiny.detokenize(ids) == "😀"


# ---- evaluation ------------------------------------------------------------------------
def test_eval_logits_shapes_and_copy(tiny):
    with pytest.raises(ProSparseError):
        tiny.logits()  # nothing evaluated yet
    ids = tiny.tokenize("hello world", add_bos=True)
    tiny.eval(ids)
    assert tiny.n_past == len(ids) and tiny.tokens == ids
    a = tiny.logits()
    assert a.shape == (265,) and a.dtype == np.float32 and np.isfinite(a).all()
    a[:] = 0
    assert not np.array_equal(tiny.logits(), a)  # logits() hands out a copy


def test_eval_all_matches_step_by_step(tiny):
    ids = tiny.tokenize("hello there", add_bos=True)
    full = tiny.eval_all(ids)
    assert full.shape == (len(ids), 265) and full.dtype == np.float32
    tiny.reset()
    assert tiny.n_past == 0
    for i, t in enumerate(ids):
        tiny.eval([t])
        np.testing.assert_allclose(tiny.logits(), full[i], rtol=1e-4, atol=1e-5)


def test_reset_and_truncate(tiny):
    ids = tiny.tokenize("hello world again", add_bos=False)
    tiny.eval(ids)
    ref = tiny.logits()
    tiny.reset()
    assert tiny.n_past == 0 and tiny.tokens == []
    tiny.eval(ids)
    np.testing.assert_array_equal(tiny.logits(), ref)
    tiny.truncate(3)
    assert tiny.n_past == 3
    tiny.eval(ids[3:])
    np.testing.assert_allclose(tiny.logits(), ref, rtol=1e-5, atol=1e-6)


def test_context_full(tiny_path):
    with Model(tiny_path, threads=1, n_ctx=16) as m:
        with pytest.raises(ProSparseError) as e:
            m.eval(list(range(3, 20)))
        assert e.value.code is not None
        with pytest.raises(ProSparseError, match="context"):
            list(m.generate(list(range(3, 40)), max_tokens=4))
        text = "".join(m.generate([5, 6, 7], max_tokens=100, temperature=0))
        assert m.last_generation.stop_reason in ("context", "eog")
        assert m.n_past <= 16 and isinstance(text, str)


def test_modes(tiny):
    assert tiny.mode == "dense"
    tiny.set_mode("dense")
    with pytest.raises(ProSparseError, match="unknown mode"):
        tiny.set_mode("fastest")


def test_stats(tiny):
    tiny.eval(tiny.tokenize("hello", add_bos=True))
    s = tiny.stats()
    assert s["mode"] == "dense" and s["n_past"] == tiny.n_past
    assert len(s["layers"]) == 2
    assert all(layer["tokens"] == tiny.n_past for layer in s["layers"])
    assert s["tokens"] == tiny.n_past and 0.0 <= s["sparsity"] <= 1.0
    tiny.reset()
    assert all(layer["tokens"] == 0 for layer in tiny.stats()["layers"])


def test_close_and_context_manager(tiny_path):
    with Model(tiny_path, threads=1, n_ctx=16) as m:
        assert not m.closed
    assert m.closed
    m.close()  # twice is fine
    with pytest.raises(ProSparseError, match="closed"):
        m.tokenize("x")


# ---- generation --------------------------------------------------------------------------
def test_greedy_is_the_argmax_chain(tiny):
    prompt = tiny.tokenize("hello", add_bos=True)
    text = "".join(tiny.generate(prompt, max_tokens=12, temperature=0))
    got = tiny.last_generation.tokens
    tiny.reset()
    tiny.eval(prompt)
    want = []
    for _ in range(12):
        t = int(np.argmax(tiny.logits()))
        want.append(t)
        if tiny.is_eog(t):
            break
        tiny.eval([t])
    assert got == want
    assert text == tiny.detokenize([t for t in want if not tiny.is_eog(t)])


def test_seeded_sampling_is_reproducible(tiny):
    kw = dict(max_tokens=16, temperature=1.0, top_k=50, top_p=0.95)
    a = "".join(tiny.generate("hello world", seed=7, **kw))
    ids_a = tiny.last_generation.tokens
    b = "".join(tiny.generate("hello world", seed=7, **kw))  # reuses the cached prompt prefix
    assert (a, ids_a) == (b, tiny.last_generation.tokens)
    assert tiny.last_generation.n_cached > 0


def test_streaming_never_splits_a_character(succ):
    pieces = list(succ.generate("A", max_tokens=20, temperature=0))
    assert "".join(pieces) == "😀BC"
    assert all("\ufffd" not in p for p in pieces)
    assert "😀" in pieces[0]  # whole, although three tokens carried it
    assert succ.last_generation.stop_reason == "eog"
    assert succ.last_generation.n_generated == 6  # ðŁ, 0x98, 0x80, B, C, <|im_end|>


def test_stop_strings(succ):
    assert "".join(succ.generate("A", temperature=0, stop=["BC"])) == "😀"
    assert succ.last_generation.stop_reason == "stop"
    assert "".join(succ.generate("A", temperature=0, stop="C")) == "😀B"
    assert "".join(succ.generate("A", temperature=0, stop=["B", "😀"])) == ""
    assert "".join(succ.generate("A", temperature=0, max_tokens=4)) == "😀B"
    assert succ.last_generation.stop_reason == "length"


def test_text_stream_unit():
    t = TextStream(["<|end|>"])
    out = [t.push(b) for b in (b"ok ", b"\xf0\x9f", b"\x98\x80", b" <|e", b"nd|> never")]
    assert out == ["ok ", "", "😀", " ", ""] and t.stopped and t.flush() == ""
    t = TextStream()
    assert t.push(b"\xe6\x97") == "" and t.push(b"\xa5") == "日" and t.push(b"\xe6") == ""
    assert t.flush() == "\ufffd"  # an unfinished character at the very end is shown as such


# ---- chat --------------------------------------------------------------------------------------
def test_chat_uses_the_file_template(succ):
    msgs = [{"role": "user", "content": "hi"}]
    assert render_chat(succ, msgs) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert succ.chat(msgs, temperature=0) == "A😀BC"
    assert "".join(succ.chat(msgs, temperature=0, stream=True)) == "A😀BC"


def test_chat_without_template_warns(tmp_path):
    path = write_tiny_llama(tmp_path / "notemplate.gguf", chat_template=None)
    with Model(path, threads=1, n_ctx=64) as m:
        with pytest.warns(UserWarning, match="ChatML"):
            prompt = render_chat(m, [{"role": "user", "content": "x"}])
    assert prompt == render_template(CHATML_TEMPLATE, [{"role": "user", "content": "x"}])


def test_template_sandbox_and_errors():
    tpl = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}{{ bos_token }}ok"
    assert render_template(tpl, [{"role": "user", "content": "x"}], bos_token="<s>") == "<s>ok"
    with pytest.raises(ProSparseError, match="user first"):
        render_template(tpl, [{"role": "system", "content": "x"}])
    with pytest.raises(ProSparseError):  # the sandbox refuses attribute games
        render_template("{{ messages.__class__.__mro__ }}", [])
    with pytest.raises(ProSparseError, match="role"):
        render_template(CHATML_TEMPLATE, [{"content": "no role"}])


# ---- SmolLM2 --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(smollm2_path):
    with Model(smollm2_path, threads=2, n_ctx=512) as m:
        yield m


@pytest.mark.real
def test_smollm2_info_and_round_trip(smol):
    i = smol.info
    assert (i.n_layer, i.n_embd, i.n_ff, i.n_head, i.n_head_kv, i.n_vocab) == (30, 576, 1536, 9, 3, 49152)
    assert i.tied_output and i.weight_type_name == "Q4_1"
    ids = smol.tokenize(TEXT, add_bos=False)
    assert smol.detokenize(ids) == TEXT
    # emoji split over byte tokens stream whole
    stream = TextStream()
    pieces = [stream.push(smol.token_bytes(t)) for t in smol.tokenize("👍🏽😀", add_bos=False)] + [stream.flush()]
    assert "".join(pieces) == "👍🏽😀" and all("\ufffd" not in p for p in pieces)


@pytest.mark.real
def test_smollm2_chatml(smol):
    msgs = [{"role": "user", "content": "Hi"}]
    assert render_chat(smol, msgs) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    ids = smol.tokenize_prompt(render_chat(smol, msgs))
    assert ids[0] == 1 and ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> x3, <|im_end|> x2


@pytest.mark.real
def test_smollm2_greedy_reads_sensibly(smol):
    text = "".join(smol.generate("The capital of France is", max_tokens=8, temperature=0))
    assert "Paris" in text, text
    reply = smol.chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}],
                      temperature=0, max_tokens=32)
    assert "Paris" in reply, reply
    assert smol.last_generation.stop_reason == "eog"


def test_relu_file_counters_and_bench_modes(tmp_path):
    from prosparse_cpu.bench import default_modes

    path = write_tiny_llama(tmp_path / "relu.gguf", activation="relu", predictor_rank=8)
    with Model(path, threads=2, n_ctx=64) as m:
        assert m.info.arch == "prosparse" and m.info.activation == "relu" and m.info.has_predictor
        assert m.info.predictor_rank == 8
        m.eval(m.tokenize("hello world, some text", add_bos=True))
        s = m.stats()
        # random weights: roughly half the ReLU outputs are zero, in every layer
        assert 0.2 < s["sparsity"] < 0.8
        assert all(0.1 < layer["sparsity"] < 0.9 for layer in s["layers"])
        assert default_modes(m) == ["dense", "sparse", "predict"]
    with Model(write_tiny_llama(tmp_path / "silu.gguf"), threads=1, n_ctx=16) as m:
        assert default_modes(m) == ["dense"]


# ---- perplexity ------------------------------------------------------------------------------------
def test_perplexity_matches_a_direct_computation(tiny):
    from prosparse_cpu.perplexity import perplexity

    text = TEXT * 4
    ids = tiny.tokenize(text, add_bos=False)
    res = perplexity(tiny, text, n_ctx=32, max_windows=2)
    assert (res.n_windows, res.n_tokens_scored) == (2, 2 * 15)
    nll = []
    for w in range(2):
        win = ids[w * 32:(w + 1) * 32]  # the tiny file does not ask for BOS
        tiny.reset()
        logits = tiny.eval_all(win).astype(np.float64)
        for i in range(16, 31):
            row = logits[i]
            nll.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[win[i + 1]])
    assert res.ppl == pytest.approx(float(np.exp(np.mean(nll))), rel=1e-9)
    assert res.ppl_stderr > 0
    with pytest.raises(ProSparseError, match="window"):
        perplexity(tiny, "too short", n_ctx=32)


@pytest.mark.real
@pytest.mark.llamacpp
@pytest.mark.slow
def test_smollm2_perplexity_matches_llama_cpp(smol, llama_cpp, smollm2_path):
    from prosparse_cpu.perplexity import perplexity, token_nll

    text = open(__file__, encoding="utf-8").read()  # ordinary English and code, ~3k tokens
    res = perplexity(smol, text, n_ctx=256, max_windows=2)
    llm = llama_cpp.Llama(model_path=smollm2_path, n_ctx=256, n_threads=2, n_threads_batch=2, logits_all=True,
                          verbose=False)
    ids = smol.tokenize(text, add_bos=False)
    nll = []
    for w in range(2):
        win = ids[w * 256:(w + 1) * 256]
        llm.reset()
        llm._ctx.kv_cache_clear()
        llm.eval(win)
        logits = np.array(llm.scores[:256])
        nll.append(token_nll(logits[128:255], np.array(win[129:])))
    ref = float(np.exp(np.concatenate(nll).mean()))
    llm.close()
    assert res.ppl == pytest.approx(ref, rel=0.02)


def test_read_bandwidth_hook():
    """ps_debug_read_bandwidth: a positive figure; bad arguments are refused, not crashed on."""
    from prosparse_cpu._lib import read_bandwidth

    assert read_bandwidth(2, gib=1 / 16, reps=3) > 0
    for bad in ({"threads": 0}, {"threads": 1, "reps": 0}, {"threads": 1, "gib": 1 / 4096}):
        with pytest.raises(ProSparseError, match="read bandwidth"):
            read_bandwidth(**({"gib": 1 / 16, "reps": 1} | bad))


def test_model_read_bandwidth(tiny, smollm2_path):
    """The read bandwidth of a model's own weight copies: refused with a reason
    when they are too small to leave the caches; a positive figure on SmolLM2."""
    with pytest.raises(ProSparseError, match="too few to measure"):
        tiny.read_bandwidth()
    with Model(smollm2_path, threads=2) as m:
        assert m.read_bandwidth(reps=1) > 0


def test_map_only_equals_copied_weights(smollm2_path, tmp_path):
    """Running from the mapping (no load-time copies) gives the copies' logits
    bit for bit, on the real model and on a tiny Q4_0 prosparse model."""
    tiny = write_gguf(make_hf_llama(seed=3, n_layer=2, n_embd=64, n_ff=96), tmp_path / "q4.gguf",
                      wtype="q4_0", arch="prosparse", activation="relu")
    for path in (smollm2_path, str(tiny)):
        out = []
        for copy in (True, False):
            with Model(path, threads=2, n_ctx=64, copy_weights=copy) as m:
                out.append(m.eval_all([1, 2, 3, 4, 5, 6, 7, 8]))
        np.testing.assert_array_equal(out[0].view(np.uint32), out[1].view(np.uint32))
    with Model(smollm2_path, threads=2, n_ctx=64, copy_weights=False) as m:
        with pytest.raises(ProSparseError, match="none when loaded map-only"):
            m.read_bandwidth()
