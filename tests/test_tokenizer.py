"""Tokenizer ids against llama.cpp (and SentencePiece itself) on the same files.

- SmolLM2 (gpt2 BPE, "smollm" pre-tokenizer): a varied text (prose, code,
  digits, emoji and other scripts, whitespace runs, special tokens) with
  parse_special on and off, a long real text, every token's piece bytes and
  the end-of-generation set, all compared with llama.cpp.
- The same vocabulary re-labelled with the "llama-bpe", "gpt-2" and
  "default" pre-tokenizers, in tiny model files written here.
- A SentencePiece BPE model trained inside the test on text found on this
  machine, written as a "llama" vocabulary: ids compared with the
  sentencepiece processor's own encode and with llama.cpp.
"""
from __future__ import annotations

import ctypes
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from support import SMOLLM2

gguf = pytest.importorskip("gguf")


VARIED = [
    # prose
    "The quick brown fox jumps over the lazy dog. It wasn't the fox's fault; they'd said so.",
    "I'M SURE WE'LL BE FINE, DON'T WORRY. You're right -- we've done it before, haven't we?",
    "contractions glued to words: IT'SOK it'sok we'veGot THEY'REthere it'llWork DON'Tdo I'dGo 'x '",
    "In 1492, Columbus sailed the ocean blue.\nIn 2026, the ships are autonomous.",
    # code
    "def fib(n: int) -> int:\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "int main(void) {\n\tfor (int i = 0; i < 10; i++) { printf(\"%d\\n\", i * i); }\n\treturn 0;\n}\n",
    '{"name": "prosparse", "version": "0.1.0", "tags": ["llm", "cpu"], "ok": true, "n": null}',
    "x = a**2 + b**2; y = x >> 3 | 0xFF & ~mask; s = f'{x!r:>10}'  # comment\r\n",
    # digits
    "3.14159265358979323846 and 2.718281828459045; 1234567890123456789012345678901234567890",
    "Call +1 (555) 010-9999 by 2026-11-29T07:50:00Z, pay $1,234,567.89 or 10^12 units.",
    "¹²³ ½ ¾ ٠١٢٣٤٥ ४२ ⅷ ①②",
    # emoji and other scripts
    "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇫🇷 heart ❤️ done",
    "中文测试：你好，世界！日本語のテキストです。한국어 문장입니다.",
    "café naïve résumé coöperate Ångström — e\u0301 vs é; Straße, ÆØÅ, ĳ",
    "مرحبا بالعالم، كيف حالك؟ שלום עולם! Привет, мир! Γειά σου Κόσμε! नमस्ते दुनिया ภาษาไทย",
    "∑_{i=1}^{n} x_i² ≤ ∞ → ← ≠ ≈ ± × ÷ ∂∇ ∀∃ ¬∧∨ ⊂⊃ ©®™ §¶ ‰ € £ ¥",
    # whitespace runs
    "   leading spaces, trailing spaces   ",
    "tabs\t\tand\t \tmixed\n\n\n\nnewlines\r\n\r\nwindows\n \n \n",
    "multiple     spaces      between          words\u00a0nbsp\u3000ideographic\u2003em\u2009thin",
    "\n\n\n",
    " ",
    "\t",
    "a" * 300 + " " + " " * 100 + "b",
    "9" * 301,
    "12345 123 99912 1234567 xyzzy xyzzyxyzzy plugh",
    "vertical\x0btab\x0cform\x1funit\x00nul\x7fdel",
    # special-token text
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<|endoftext|>text<|endoftext|><|endoftext|> <|im_end|>x<|im_end",
    "<|im_start<|im_start|>|> <reponame>repo<filename>a.py<file_sep><empty_output>",
    "broken <|im_ start|> and <| im_end |> and <im_end>",
    # punctuation runs
    "Wait... what?!?! No way!!! ---> [[link]] ((parens)) {{braces}} ``code`` '''quotes''' \"\"\"doc\"\"\"",
    "",
]


def real_text() -> str:
    """A long ordinary text from this machine: licence prose and stdlib source."""
    parts = []
    lic = Path("/usr/share/common-licenses")
    for name in ("GPL-3", "Apache-2.0", "Artistic"):
        if (lic / name).exists():
            parts.append((lic / name).read_text(encoding="utf-8", errors="replace"))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in ("textwrap.py", "argparse.py"):
        if (stdlib / name).exists():
            parts.append((stdlib / name).read_text(encoding="utf-8"))
    return "\n".join(parts)


# ---- fixtures -----------------------------------------------------------------

def llama_vocab(path):
    llama_cpp = pytest.importorskip("llama_cpp")
    return llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False, n_threads=2, n_threads_batch=2)


def open_model(path):
    from prosparse_cpu import Model
    return Model(path, threads=1, n_ctx=64)


@pytest.fixture(scope="module")
def smollm2():
    if not SMOLLM2.exists():
        pytest.skip(f"{SMOLLM2} missing (make model)")
    m = open_model(SMOLLM2)
    yield m
    m.close()


@pytest.fixture(scope="module")
def llama_smollm2():
    if not SMOLLM2.exists():
        pytest.skip(f"{SMOLLM2} missing (make model)")
    return llama_vocab(SMOLLM2)


def compare(ours, ref, texts, specials=(False, True)):
    """Tokenize every text both ways; returns (n_texts, n_tokens) compared."""
    n_tok = 0
    for text in texts:
        data = text.encode("utf-8")
        for special in specials:
            want = ref.tokenize(data, add_bos=False, special=special)
            got = ours.tokenize(text, add_bos=False, special=special)
            assert got == want, f"text {text[:60]!r} special={special}:\n ours {got}\n llama {want}"
            n_tok += len(want)
    return len(texts) * len(specials), n_tok


# ---- SmolLM2 -------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.llamacpp
def test_smollm2_varied_text_matches_llama_cpp(smollm2, llama_smollm2):
    n, n_tok = compare(smollm2, llama_smollm2, VARIED)
    print(f"SmolLM2 varied text: {n} tokenizations, {n_tok} tokens identical to llama.cpp")
    assert n_tok > 1000


@pytest.mark.real
@pytest.mark.llamacpp
def test_smollm2_long_real_text_matches_llama_cpp(smollm2, llama_smollm2):
    text = real_text()
    if len(text) < 10000:
        pytest.skip("no long text found on this machine")
    want = llama_smollm2.tokenize(text.encode("utf-8"), add_bos=False, special=False)
    got = smollm2.tokenize(text, add_bos=False, special=False)
    first_bad = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    assert got == want, f"first difference at token {first_bad} of {len(want)}"
    print(f"SmolLM2 long text: {len(text)} chars, {len(want)} tokens identical to llama.cpp")


# pieces for random strings: whitespace of every kind, format characters,
# contractions, letters/marks/digits/numbers of several scripts, punctuation,
# emoji, private-use and unassigned code points, special-token text and halves
FUZZ_PIECES = [
    " ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u0085", "\u2028", "\u3000", "\u200d", "\u200b", "\ufeff",
    "'s", "'S", "'ll", "'LL", "'re", "'", "''", "a", "Z", "é", "ß", "ǅ", "ʰ", "中", "の", "한", "ا", "ह", "ि",
    "\u0301", "\u0670", "0", "7", "²", "½", "٣", "Ⅻ", "①", "!", "?", ".", ",", "-", "_", "`", "~", "$", "+", "<",
    "=", "|", "^", "€", "©", "😀", "👍🏽", "🇫🇷", "\ue000", "\U000f0000", "\u0378", "\U0001fbf9", "\U00030000",
    "\x00", "\x7f", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<reponame>", "<|im_", "|>",
]
FUZZ_WORDS = ["hello", "World", "the", "DON'T", "it's", "x1", "123456", "3.14", "foo_bar", "über", "naïve",
              "日本語", "مرحبا", "def", "return"]


def random_strings(n, seed):
    import random
    rng = random.Random(seed)
    return ["".join(rng.choice(FUZZ_PIECES) if rng.random() < 0.6 else rng.choice(FUZZ_WORDS)
                    for _ in range(rng.randint(1, 25))) for _ in range(n)]


@pytest.mark.real
@pytest.mark.llamacpp
def test_smollm2_random_strings_match_llama_cpp(smollm2, llama_smollm2):
    n, n_tok = compare(smollm2, llama_smollm2, random_strings(500, seed=1))
    print(f"SmolLM2 random strings: {n} tokenizations, {n_tok} tokens identical to llama.cpp")


@pytest.mark.real
@pytest.mark.llamacpp
def test_smollm2_invalid_utf8_matches_llama_cpp(smollm2, llama_smollm2):
    """Raw bytes through the C API: bad sequences become U+FFFD as in llama.cpp."""
    L = smollm2._lib
    for data in (b"\xff\xfe abc", b"caf\xc3", b"\xc3\x28 x \xe2\x82", b"\xed\xa0\x80 surrogate",
                 b"\xc0\x80 overlong", b"ok \xf0\x9f\x98", b"\x80\x80\x80"):
        cap = 4 * len(data) + 8
        out = (ctypes.c_int32 * cap)()
        n = L.ps_tokenize(smollm2._model, data, len(data), out, cap, 0, 0)
        assert n >= 0
        assert list(out[:n]) == llama_smollm2.tokenize(data, add_bos=False, special=False), data


@pytest.mark.real
@pytest.mark.llamacpp
def test_smollm2_bos_and_eog_match_llama_cpp(smollm2, llama_smollm2):
    import llama_cpp
    vocab = llama_smollm2._model.vocab
    assert smollm2.add_bos == bool(llama_cpp.llama_vocab_get_add_bos(vocab)) is False
    # add_bos=True prepends BOS regardless; llama.cpp adds it only when the file asks
    assert smollm2.tokenize("Hi", add_bos=True)[0] == llama_cpp.llama_vocab_bos(vocab) == 1
    assert smollm2.tokenize("Hi", add_bos=smollm2.add_bos) == llama_smollm2.tokenize(b"Hi", add_bos=True)
    L, h = smollm2._lib, smollm2._model
    assert L.ps_token_eos(h) == llama_cpp.llama_vocab_eos(vocab) == 2
    assert L.ps_token_eot(h) == 2  # <|im_end|>
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    ours = {t for t in range(n) if L.ps_token_is_eog(h, t)}
    ref = {t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    assert ours == ref == {0, 2, 4}  # <|endoftext|>, <|im_end|>, <reponame> (a FIM token)


@pytest.mark.real
@pytest.mark.llamacpp
def test_smollm2_every_piece_matches_llama_cpp(smollm2, llama_smollm2):
    assert_pieces_equal(smollm2, llama_smollm2._model.vocab)


def assert_pieces_equal(ours, vocab):
    """Every token's bytes, special tokens rendered and not, equal llama.cpp's (vocab: its llama_vocab)."""
    import llama_cpp
    L, h = ours._lib, ours._model
    buf, ref = ctypes.create_string_buffer(512), ctypes.create_string_buffer(512)
    for special in (0, 1):
        bad = []
        for t in range(llama_cpp.llama_vocab_n_tokens(vocab)):
            k = L.ps_token_to_piece(h, t, buf, 512, special)
            kr = llama_cpp.llama_token_to_piece(vocab, t, ref, 512, 0, bool(special))
            if buf.raw[:k] != ref.raw[:kr]:
                bad.append((t, buf.raw[:k], ref.raw[:kr]))
        assert not bad, bad[:5]


@pytest.mark.real
def test_smollm2_round_trip(smollm2):
    texts = VARIED + [real_text()[:20000]]
    for text in texts:
        for special in (False, True):
            ids = smollm2.tokenize(text, add_bos=False, special=special)
            assert smollm2.detokenize(ids, special=True) == text, text[:60]
    # control tokens render as nothing unless asked for
    ids = smollm2.tokenize("<|im_start|>user<|im_end|>", add_bos=False, special=True)
    assert ids == [1, 4093, 2]
    assert smollm2.detokenize(ids, special=False) == "user"


@pytest.mark.real
def test_smollm2_tokenize_edge_arguments(smollm2):
    L, h = smollm2._lib, smollm2._model
    assert L.ps_tokenize(h, b"", 0, None, 0, 0, 0) == 0
    need = L.ps_tokenize(h, b"hello world", 11, None, 0, 0, 0)  # count only
    assert need == 2
    out = (ctypes.c_int32 * 1)()
    assert L.ps_tokenize(h, b"hello world", 11, out, 1, 0, 0) == 2  # too small: the count needed
    assert L.ps_tokenize(h, b"x", -1, out, 1, 0, 0) < 0
    assert L.ps_token_to_piece(h, -1, None, 0, 0) < 0
    assert L.ps_token_to_piece(h, 49152, None, 0, 0) < 0
    assert L.ps_token_to_piece(h, 1, None, 0, 1) == len("<|im_start|>")  # length even with no buffer


# ---- other pre-tokenizers on the same vocabulary -----------------------------------

def write_vocab_model(path, tokens, types, *, model="gpt2", pre=None, merges=None, scores=None,
                      bos=None, eos=None, unk=None, add_bos=None, add_space_prefix=None, write_kv=None):
    """A one-layer random llama model whose interesting part is its vocabulary.
    With write_kv(writer), that function writes every tokenizer key instead
    (tokens and types are then only used for the vocabulary size)."""
    n_vocab, n_embd, n_ff, hd = len(tokens), 32, 64, 16
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_embedding_length(n_embd)
    w.add_block_count(1)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(2)
    w.add_head_count_kv(1)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hd)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(n_vocab)
    if write_kv is not None:
        write_kv(w)
    else:
        w.add_tokenizer_model(model)
        if pre is not None:
            w.add_tokenizer_pre(pre)
        w.add_token_list(tokens)
        w.add_token_types(types)
        if scores is not None:
            w.add_token_scores(scores)
        if merges is not None:
            w.add_token_merges(merges)
        for fn, v in ((w.add_bos_token_id, bos), (w.add_eos_token_id, eos), (w.add_unk_token_id, unk),
                      (w.add_add_bos_token, add_bos), (w.add_add_space_prefix, add_space_prefix)):
            if v is not None:
                fn(v)
    rng = np.random.default_rng(0)

    def rand(*shape):
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    w.add_tensor("token_embd.weight", rand(n_vocab, n_embd))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("blk.0.attn_q.weight", rand(n_embd, n_embd))
    w.add_tensor("blk.0.attn_k.weight", rand(hd, n_embd))
    w.add_tensor("blk.0.attn_v.weight", rand(hd, n_embd))
    w.add_tensor("blk.0.attn_output.weight", rand(n_embd, n_embd))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(n_embd, np.float32))
    w.add_tensor("blk.0.ffn_gate.weight", rand(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_up.weight", rand(n_ff, n_embd))
    w.add_tensor("blk.0.ffn_down.weight", rand(n_embd, n_ff))
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def smollm2_vocab():
    if not SMOLLM2.exists():
        pytest.skip(f"{SMOLLM2} missing (make model)")
    r = gguf.GGUFReader(str(SMOLLM2))

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    f = r.fields["tokenizer.ggml.token_type"]
    types = [int(f.parts[i][0]) for i in f.data]
    return strings("tokenizer.ggml.tokens"), types, strings("tokenizer.ggml.merges")


@pytest.mark.real
@pytest.mark.llamacpp
@pytest.mark.parametrize("pre", ["llama-bpe", "gpt-2", "default", "qwen2", "dbrx", "command-r", "olmo"])
def test_bpe_pretokenizers_match_llama_cpp(pre, smollm2_vocab, tmp_path):
    tokens, types, merges = smollm2_vocab
    # extra tokens so digit grouping (llama-bpe: 3, qwen2: 1) and whole-word
    # lookups before merging (llama-bpe only) change the ids
    tokens = tokens + ["12", "123", "xyzzy", "\u0120xyzzy"]
    types = types + [1, 1, 1, 1]
    merges = merges + ["1 2", "12 3"]
    path = write_vocab_model(tmp_path / f"{pre}.gguf", tokens, types, pre=pre, merges=merges,
                             bos=1, eos=2, add_bos=False)
    ref = llama_vocab(path)
    m = open_model(path)
    try:
        n, n_tok = compare(m, ref, VARIED + [real_text()[:30000]] + random_strings(300, seed=2))
        print(f"pre-tokenizer {pre}: {n} tokenizations, {n_tok} tokens identical to llama.cpp")
    finally:
        m.close()


# ---- SentencePiece ("llama" vocabulary) ------------------------------------------------

SPM_USER = ["<|user|>", "<sep>"]  # user-defined pieces: cut out of the text even as plain text
SPM_EXTRA = [
    "<|user|>hello<sep>world <|user|> x<sep><sep>",
    "Ünïcödé wörds: café, naïve, Straße; 中文 日本語 한국어 العربية",
    "numbers 12345 and 3.14159, emoji 😀 and symbols ∑ ≤ →",
    "code: def f(x):\n    return x * 2  # done\n",
]


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    spm = pytest.importorskip("sentencepiece")
    import io
    text = real_text()
    if len(text) < 10000:
        pytest.skip("no training text found on this machine")
    lines = [ln for ln in text.splitlines() if ln.strip()] + SPM_EXTRA * 20
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=2000,
        byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
        add_dummy_prefix=True, character_coverage=0.9995, minloglevel=2, num_threads=1,
        user_defined_symbols=SPM_USER)
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(3 if sp.is_control(i) else 2 if sp.is_unknown(i) else 6 if sp.is_byte(i)
                     else 5 if sp.is_unused(i) else 4 if tokens[-1] in SPM_USER else 1)
    path = write_vocab_model(tmp_path_factory.mktemp("spm") / "spm.gguf", tokens, types, model="llama",
                             scores=scores, bos=sp.bos_id(), eos=sp.eos_id(), unk=sp.unk_id(),
                             add_bos=True, add_space_prefix=True)
    return sp, path


SPM_TEXTS = [t for t in VARIED if "\x00" not in t] + SPM_EXTRA + [
    "Hello world", "hello  world", " leading", "trailing ", "unseen ☃ snowman ✈ plane 𝄞 clef",
    "<s>literal control text</s> <unk>",
]


def test_spm_matches_sentencepiece(spm_model):
    """User-defined pieces are left out here: llama.cpp (our reference) cuts
    them out first and prefixes a space to the text after them, sentencepiece
    does not; test_spm_matches_llama_cpp covers them."""
    sp, path = spm_model
    m = open_model(path)
    try:
        assert m.add_bos
        n_tok = 0
        texts = [t for t in SPM_TEXTS if not any(u in t for u in SPM_USER)]
        for text in texts + [real_text()[:20000]]:
            want = sp.encode(text)
            got = m.tokenize(text, add_bos=False, special=False)
            assert got == want, f"text {text[:60]!r}:\n ours {got}\n spm  {want}"
            n_tok += len(want)
            assert m.tokenize(text, add_bos=True)[:1] == [sp.bos_id()]
            # pieces: the dummy-prefix space comes back at the front
            if text:
                assert m.detokenize(got) == " " + text
        print(f"SentencePiece BPE: {len(texts) + 1} texts, {n_tok} tokens identical to sentencepiece")
        assert m.is_eog(sp.eos_id())
    finally:
        m.close()


@pytest.mark.llamacpp
def test_spm_matches_llama_cpp(spm_model):
    sp, path = spm_model
    ref = llama_vocab(path)
    m = open_model(path)
    try:
        n, n_tok = compare(m, ref, SPM_TEXTS + [real_text()[:20000]] + random_strings(300, seed=3))
        print(f"SentencePiece vocab: {n} tokenizations, {n_tok} tokens identical to llama.cpp")
    finally:
        m.close()
