"""Tokenizers of LLaMA 3.x, Qwen2/Qwen3 and Gemma 3, from Hugging Face folders
through prosparse-convert, against llama.cpp.

- Tiny tokenizers shaped like each family's (support/family_vocab.py) are
  converted; the tokenizer.ggml.* keys must be what llama.cpp's converter
  writes for such a folder (its rules restated here over transformers'
  AutoTokenizer view of the files), and our engine's ids must equal
  llama.cpp's on the converted file for varied text, with and without
  special-token parsing.
- The real Gemma 3 270M file's tokenizer (262k SentencePiece pieces): its
  tokenizer keys are copied into a tiny llama model (the engine does not run
  gemma3 here), and our ids on that copy must equal llama.cpp's on the real
  file itself. The same vocabulary, rebuilt as a Hugging Face folder
  (tokenizer.model, or tokenizer.json as transformers saves it), converts to
  the file's keys (tokenizer.model) or to llama.cpp's ids (tokenizer.json).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import unicodedata

import pytest

from prosparse_cpu.convert.cli import convert
from prosparse_cpu.convert.reference import GGUFModel
from prosparse_cpu.convert.tokenizer_meta import add_hf_tokenizer
from support import GEMMA3
from support.compare import open_engine
from support.gguf_kv import read_kv
from support.family_vocab import (GEMMA_USER, LLAMA3_SPECIALS, make_gemma_json_tokenizer, make_gemma_tokenizer,
                                  make_llama3_tokenizer, make_qwen2_tokenizer)
from support.hf_models import make_hf_model
from support.vocab import SAMPLE_TEXTS
from test_tokenizer import (VARIED, assert_pieces_equal, compare, llama_vocab, random_strings, real_text,
                            write_vocab_model)

gguf = pytest.importorskip("gguf")

MAKERS = {"llama3": make_llama3_tokenizer, "qwen2": make_qwen2_tokenizer, "gemma": make_gemma_tokenizer,
          "gemma_json": make_gemma_json_tokenizer}
PRE = {"llama3": "llama-bpe", "qwen2": "qwen2", "gemma": "default", "gemma_json": "default"}
TEXTS = VARIED + SAMPLE_TEXTS


@pytest.fixture(scope="module", params=sorted(MAKERS))
def family(request, tmp_path_factory):
    """(name, HF folder, converted GGUF): a tiny random llama model carrying the family's tokenizer."""
    name = request.param
    hf = tmp_path_factory.mktemp(name) / "hf"
    n_vocab = MAKERS[name](hf)
    # Qwen2.5's embedding has more rows than its tokenizer has tokens: [PAD] tokens fill them
    n_rows = n_vocab + 11 if name == "qwen2" else n_vocab
    make_hf_model(hf, "llama", "silu", n_rows, shard=None, **config_ids(name, hf))
    out = hf.parent / "m.gguf"
    convert(hf, out, "f32", progress=False)
    return name, hf, out


def config_ids(name, hf) -> dict:
    """config.json's special ids as each family's checkpoints have them (gguf's SpecialVocab
    falls back to them where tokenizer_config.json names no token of tokenizer.json)."""
    if name.startswith("gemma"):
        return dict(pad_token_id=0, eos_token_id=1, bos_token_id=2)
    added = {a["content"]: a["id"] for a in json.loads((hf / "tokenizer.json").read_text())["added_tokens"]}
    if name == "llama3":
        return dict(bos_token_id=added["<|begin_of_text|>"], eos_token_id=added["<|end_of_text|>"])
    return dict(bos_token_id=added["<|endoftext|>"], eos_token_id=added["<|im_end|>"])


# ---- the keys llama.cpp's converter writes --------------------------------------------

def looks_special(t: str) -> bool:
    """llama.cpp's converter: added tokens named like these are CONTROL even when not marked special."""
    return (t in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (t.startswith("<|") and t.endswith("|>"))
            or (t.startswith("<unused") and t.endswith(">")))


def expected_bpe_vocab(hf, n_vocab):
    """(tokens, types) by llama.cpp's byte-level BPE rules, over AutoTokenizer's view of the folder."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(hf))
    rev = {i: t for t, i in tok.get_vocab().items()}
    added, dec = tok.get_added_vocab(), tok.added_tokens_decoder
    tokens, types = [], []
    for i in range(n_vocab):
        t = rev.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]"), types.append(gguf.TokenType.UNUSED)
        elif t in added:
            ctl = dec[i].special or looks_special(t)
            tokens.append(t if ctl else t.replace("\u2581", " "))
            types.append(gguf.TokenType.CONTROL if ctl else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(t), types.append(gguf.TokenType.NORMAL)
    return tokens, types


def expected_spm_vocab(hf, n_vocab):
    """(tokens, scores, types) by llama.cpp's SentencePiece rules: the model's pieces, then
    tokenizer_config.json's added tokens (score -1000; CONTROL if special or named like it)."""
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))
    T = gguf.TokenType
    tokens = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    scores = [sp.get_score(i) for i in range(sp.get_piece_size())]
    types = [T.UNKNOWN if sp.is_unknown(i) else T.CONTROL if sp.is_control(i) else T.UNUSED if sp.is_unused(i)
             else T.BYTE if sp.is_byte(i) else T.NORMAL for i in range(sp.get_piece_size())]
    conf = json.loads((hf / "tokenizer_config.json").read_text())
    for k, v in conf["added_tokens_decoder"].items():
        i, t = int(k), v["content"]
        ctl = v["special"] or looks_special(t)
        tokens[i], scores[i] = (t if ctl else t.replace("\u2581", " ")), -1000.0
        types[i] = T.CONTROL if ctl else T.USER_DEFINED
    assert len(tokens) == n_vocab
    return tokens, scores, types


def test_converted_keys_are_llama_cpps(family):
    name, hf, out = family
    m = GGUFModel(out)
    n_vocab = len(m.kv("tokenizer.ggml.tokens"))
    conf = json.loads((hf / "tokenizer_config.json").read_text())
    template = conf.get("chat_template") or (hf / "chat_template.jinja").read_text()
    assert m.kv("tokenizer.ggml.pre") == PRE[name]
    assert m.kv("tokenizer.chat_template") == template
    if name == "gemma_json":
        # llama.cpp's converter has no path for this folder (it wants tokenizer.model for
        # Gemma); the vocabulary must still be the pieces, ids as in tokenizer.json
        tokens, types = expected_bpe_vocab(hf, n_vocab)
        assert m.kv("tokenizer.ggml.model") == "llama"
        assert m.kv("tokenizer.ggml.tokens") == tokens
        assert m.kv("tokenizer.ggml.add_space_prefix") is False
        assert m.kv("tokenizer.ggml.bos_token_id") == 2 and m.kv("tokenizer.ggml.eos_token_id") == 1
        types = [gguf.TokenType.BYTE if len(t) == 6 and t.startswith("<0x") and y == gguf.TokenType.NORMAL else y
                 for t, y in zip(tokens, types)]
    elif name == "gemma":
        tokens, scores, types = expected_spm_vocab(hf, n_vocab)
        assert m.kv("tokenizer.ggml.model") == "llama"
        assert m.kv("tokenizer.ggml.tokens") == tokens
        assert m.kv("tokenizer.ggml.scores") == pytest.approx(scores)
        assert m.kv("tokenizer.ggml.add_space_prefix") is False   # Gemma's SentencePiece has no dummy prefix
        ids = {k: m.kv(f"tokenizer.ggml.{k}_token_id") for k in ("padding", "eos", "bos", "unknown")}
        assert ids == {"padding": 0, "eos": 1, "bos": 2, "unknown": 3}
        assert m.kv("tokenizer.ggml.add_bos_token") is True and m.kv("tokenizer.ggml.add_eos_token") is False
        # the user-defined run of three '▁' is matched in raw text, so it is written with spaces
        kinds = {t: y for t, y in zip(tokens, types)}
        assert kinds["   "] == kinds["[multimodal]"] == kinds["<h1>"] == gguf.TokenType.USER_DEFINED
        assert kinds["<mask>"] == kinds["<unused0>"] == kinds["<start_of_turn>"] == gguf.TokenType.CONTROL
    else:
        tokens, types = expected_bpe_vocab(hf, n_vocab)
        tj = json.loads((hf / "tokenizer.json").read_text())
        assert m.kv("tokenizer.ggml.model") == "gpt2"
        assert m.kv("tokenizer.ggml.tokens") == tokens
        assert "tokenizer.ggml.scores" not in m.r.fields
        merges = [mg if isinstance(mg, str) else " ".join(mg) for mg in tj["model"]["merges"]]
        assert m.kv("tokenizer.ggml.merges") == merges
        vocab = {t: i for i, t in enumerate(tokens)}
        if name == "llama3":
            assert m.kv("tokenizer.ggml.bos_token_id") == vocab["<|begin_of_text|>"]
            assert m.kv("tokenizer.ggml.eos_token_id") == vocab["<|eot_id|>"]
            # BOS from the TemplateProcessing post-processor, no EOS from the ByteLevel one beside it
            assert m.kv("tokenizer.ggml.add_bos_token") is True and m.kv("tokenizer.ggml.add_eos_token") is False
            assert all(types[vocab[t]] == gguf.TokenType.CONTROL for t in LLAMA3_SPECIALS)
        else:
            assert m.kv("tokenizer.ggml.eos_token_id") == vocab["<|im_end|>"]
            assert m.kv("tokenizer.ggml.padding_token_id") == vocab["<|endoftext|>"]
            assert m.kv("tokenizer.ggml.add_bos_token") is False and m.kv("tokenizer.ggml.add_eos_token") is False
            # not marked special, but named like a control token: CONTROL, as llama.cpp has it
            assert types[vocab["<|fim_prefix|>"]] == gguf.TokenType.CONTROL
            assert types[vocab["<tool_call>"]] == gguf.TokenType.USER_DEFINED
            assert tokens[-11:] == [f"[PAD{i}]" for i in range(n_vocab - 11, n_vocab)]
            assert types[-11:] == [gguf.TokenType.UNUSED] * 11
    assert m.kv("tokenizer.ggml.token_type") == [int(t) for t in types]


@pytest.mark.llamacpp
def test_gemma_keys_equal_llama_cpp_converters(tmp_path):
    """llama.cpp's own convert_hf_to_gguf.py (env PROSPARSE_LLAMA_CPP_CONVERT, fetched by
    `make model`) on a tiny Gemma 3 folder laid out as Google ships it (tokenizer.model,
    tokenizer.json, tokenizer_config.json): every tokenizer key, value and type, is the same.
    (Its byte-level BPE route identifies pre-tokenizers by hashing a known model's
    ids, so it refuses tiny BPE vocabularies; those are checked above by its rules.)"""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig
    script = os.environ.get("PROSPARSE_LLAMA_CPP_CONVERT")
    if not script or not os.path.isfile(script):
        pytest.skip("PROSPARSE_LLAMA_CPP_CONVERT does not name llama.cpp's convert_hf_to_gguf.py (make model)")
    hf = tmp_path / "hf"
    n = make_gemma_tokenizer(hf)
    AutoTokenizer.from_pretrained(str(hf)).save_pretrained(str(tmp_path / "fast"))
    shutil.copy(tmp_path / "fast" / "tokenizer.json", hf / "tokenizer.json")
    Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=n, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                                       **config_ids("gemma", hf))).save_pretrained(str(hf))
    r = subprocess.run([sys.executable, script, str(hf), "--outfile", str(tmp_path / "ref.gguf"), "--outtype", "f32"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    w = gguf.GGUFWriter(str(tmp_path / "ours.gguf"), "gemma3")
    assert add_hf_tokenizer(w, hf, n, []) == "sentencepiece"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    ours, ref = read_kv(tmp_path / "ours.gguf", "tokenizer."), read_kv(tmp_path / "ref.gguf", "tokenizer.")
    assert sorted(ours) == sorted(ref)
    for k in ref:
        assert ours[k] == ref[k], k


# ---- ids: our engine and llama.cpp on the converted file -------------------------------

@pytest.mark.llamacpp
def test_engine_ids_equal_llama_cpp(family):
    name, hf, out = family
    ref = llama_vocab(out)
    with open_engine(out, threads=1, n_ctx=64) as m:
        n, n_tok = compare(m, ref, TEXTS + [real_text()[:20000]] + random_strings(300, seed=4))
        assert m.add_bos == (name != "qwen2")
        assert m.tokenize("Hi", add_bos=m.add_bos) == ref.tokenize(b"Hi", add_bos=True)
    print(f"{name}: {n} tokenizations, {n_tok} tokens identical to llama.cpp")


def test_engine_ids_equal_hf(family):
    """The Hugging Face tokenizer itself, where llama.cpp's algorithm is the same one:
    text that NFC leaves alone (llama.cpp does not normalise) and, for Gemma, none of the
    user-defined pieces (llama.cpp cuts them out of the text first, SentencePiece does not)."""
    name, hf, out = family
    texts = [t for t in TEXTS if t and unicodedata.normalize("NFC", t) == t]
    if name.startswith("gemma"):
        texts = [t for t in texts if "   " not in t and "\x00" not in t and not any(u in t for u in GEMMA_USER)]
    if name == "gemma":
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_file=str(hf / "tokenizer.model"))
        want = [sp.encode(t) for t in texts]
    else:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_file(str(hf / "tokenizer.json"))
        want = [tok.encode(t, add_special_tokens=False).ids for t in texts]
    with open_engine(out, threads=1, n_ctx=64) as m:
        got = [m.tokenize(t, add_bos=False, special=True) for t in texts]
    bad = [(t[:50], g, w) for t, g, w in zip(texts, got, want) if g != w]
    assert not bad, bad[:3]
    print(f"{name}: {len(texts)} texts, {sum(map(len, want))} tokens identical to the HF tokenizer")


# ---- the real Gemma 3 vocabulary ------------------------------------------------------

def copy_tokenizer_kv(kv):
    """A write_kv for write_vocab_model: the given tokenizer keys, raw bytes and value types kept."""
    V = gguf.GGUFValueType

    def write(w):
        for key, (t, v) in kv.items():
            if t == V.ARRAY:
                w.add_key_value(key, v[1], V.ARRAY, sub_type=V(v[0]))
            else:
                w.add_key_value(key, v, V(t))
    return write


@pytest.fixture(scope="module")
def gemma3_kv():
    """The real Gemma 3 file's tokenizer keys (support.gguf_kv: {key: (type, value)})."""
    if not GEMMA3.is_file():
        pytest.skip(f"{GEMMA3} missing (make model, or set PROSPARSE_GEMMA3)")
    return read_kv(GEMMA3, "tokenizer.")


@pytest.fixture(scope="module")
def gemma3(gemma3_kv, tmp_path_factory):
    """(our engine on the copied vocabulary, llama.cpp on the real file)."""
    n = len(gemma3_kv["tokenizer.ggml.tokens"][1][1])
    path = write_vocab_model(tmp_path_factory.mktemp("gemma3") / "gemma3-vocab.gguf", [None] * n, None,
                             write_kv=copy_tokenizer_kv(gemma3_kv))
    m = open_engine(path, threads=1, n_ctx=64)
    yield m, llama_vocab(GEMMA3)
    m.close()


GEMMA_TURNS = ("<start_of_turn>user\nWrite a haiku about sparse neurons.<end_of_turn>\n<start_of_turn>model\n"
               "Silent gates at rest,\n  a few sparks carry the thought —\n\tmost of us stay dark.<end_of_turn>\n")


@pytest.mark.real
@pytest.mark.llamacpp
def test_gemma3_real_vocab_ids_equal_llama_cpp(gemma3):
    ours, ref = gemma3
    n, n_tok = compare(ours, ref, TEXTS + [GEMMA_TURNS, real_text()[:30000]] + random_strings(300, seed=5))
    print(f"Gemma 3 vocabulary: {n} tokenizations, {n_tok} tokens identical to llama.cpp")
    assert n_tok > 10000


@pytest.mark.real
@pytest.mark.llamacpp
def test_gemma3_real_vocab_specials_and_pieces_equal_llama_cpp(gemma3):
    import llama_cpp
    ours, ref = gemma3
    vocab = ref._model.vocab
    L, h = ours._lib, ours._model
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    assert n == ours.n_vocab >= 262144
    assert ours.add_bos == bool(llama_cpp.llama_vocab_get_add_bos(vocab)) is True
    assert L.ps_token_bos(h) == llama_cpp.llama_vocab_bos(vocab)
    assert L.ps_token_eos(h) == llama_cpp.llama_vocab_eos(vocab)
    assert {t for t in range(n) if L.ps_token_is_eog(h, t)} == {t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)}
    assert ours.tokenize(GEMMA_TURNS, add_bos=True, special=True) == ref.tokenize(GEMMA_TURNS.encode(), add_bos=True, special=True)
    assert_pieces_equal(ours, vocab)


def gemma3_hf_folder(kv, folder):
    """A Hugging Face tokenizer folder holding the real file's vocabulary as Gemma 3
    ships it: tokenizer.model (a SentencePiece BPE with byte fallback, no dummy
    prefix) with every piece, the added tokens in tokenizer_config.json's
    added_tokens_decoder (whitespace written with '▁' there, as in Gemma's files;
    special = CONTROL in the file), and config.json's special ids."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    tokens = [t.decode() for t in kv["tokenizer.ggml.tokens"][1][1]]
    scores, types = kv["tokenizer.ggml.scores"][1][1], kv["tokenizer.ggml.token_type"][1][1]
    ids = {k: kv[f"tokenizer.ggml.{k}_token_id"][1] for k in ("bos", "eos", "unknown", "padding")}
    T, P = gguf.TokenType, pb.ModelProto.SentencePiece
    m = pb.ModelProto()
    m.trainer_spec.model_type = pb.TrainerSpec.BPE
    m.trainer_spec.byte_fallback = True
    m.trainer_spec.vocab_size = len(tokens)
    m.trainer_spec.bos_id, m.trainer_spec.eos_id = ids["bos"], ids["eos"]
    m.trainer_spec.unk_id, m.trainer_spec.pad_id = ids["unknown"], ids["padding"]
    m.normalizer_spec.name = "identity"
    m.normalizer_spec.add_dummy_prefix = False
    m.normalizer_spec.remove_extra_whitespaces = False
    m.normalizer_spec.escape_whitespaces = True
    added = {}
    for i, (t, sc, y) in enumerate(zip(tokens, scores, types)):
        if y in (T.CONTROL, T.USER_DEFINED):
            added[str(i)] = {"content": t.replace(" ", "\u2581"), "special": y == T.CONTROL,
                             "lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
        kind = (P.UNKNOWN if i == ids["unknown"] else P.CONTROL if y == T.CONTROL else P.BYTE if y == T.BYTE
                else P.USER_DEFINED if y == T.USER_DEFINED else P.NORMAL)
        m.pieces.add(piece=t.replace(" ", "\u2581"), score=sc, type=kind)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(m.SerializeToString())
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "added_tokens_decoder": added}))
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gemma3_text", "bos_token_id": ids["bos"], "eos_token_id": ids["eos"],
        "pad_token_id": ids["padding"], "vocab_size": len(tokens)}))
    return len(tokens)


@pytest.mark.real
def test_gemma3_real_vocab_converts_to_the_files_keys(gemma3_kv, tmp_path):
    """Converting that folder writes the real file's tokenizer keys, value for value and
    type for type (the file's add_sep_token comes from a tokenizer.json post-processor
    the folder lacks)."""
    n = gemma3_hf_folder(gemma3_kv, tmp_path / "hf")
    w = gguf.GGUFWriter(str(tmp_path / "tok.gguf"), "gemma3")
    notes = []
    assert add_hf_tokenizer(w, tmp_path / "hf", n, notes) == "sentencepiece" and notes == []
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    got = read_kv(tmp_path / "tok.gguf", "tokenizer.")
    want = {k: v for k, v in gemma3_kv.items() if k != "tokenizer.ggml.add_sep_token"}
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == want[k], k


@pytest.mark.real
@pytest.mark.llamacpp
def test_gemma3_real_vocab_from_tokenizer_json_gives_llama_cpps_ids(gemma3_kv, tmp_path):
    """The same vocabulary as transformers saves it (tokenizer.json: 262k-token BPE with
    byte fallback and ~515k merges, no tokenizer.model) converts to the file's tokens and
    types (scores become merge ranks) and tokenizes as llama.cpp does on the real file."""
    from transformers import AutoTokenizer
    n = gemma3_hf_folder(gemma3_kv, tmp_path / "spm")
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "spm"))
    tok.save_pretrained(str(tmp_path / "hf"))
    shutil.copy(tmp_path / "spm" / "config.json", tmp_path / "hf" / "config.json")
    assert not (tmp_path / "hf" / "tokenizer.model").exists()
    w = gguf.GGUFWriter(str(tmp_path / "tok.gguf"), "llama")
    assert add_hf_tokenizer(w, tmp_path / "hf", n, []) == "bpe-bytefallback"
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    got = read_kv(tmp_path / "tok.gguf", "tokenizer.")
    for k in ("tokens", "token_type", "add_space_prefix", "bos_token_id", "eos_token_id", "add_bos_token"):
        assert got[f"tokenizer.ggml.{k}"] == gemma3_kv[f"tokenizer.ggml.{k}"], k
    path = write_vocab_model(tmp_path / "m.gguf", [None] * n, None, write_kv=copy_tokenizer_kv(got))
    with open_engine(path, threads=1, n_ctx=64) as m:
        n_tok = compare(m, llama_vocab(GEMMA3), TEXTS + [GEMMA_TURNS, real_text()[:20000]])[1]
        assert [m.tokenize(t, add_bos=False) for t in SAMPLE_TEXTS] == [tok.encode(t, add_special_tokens=False)
                                                                       for t in SAMPLE_TEXTS]
    print(f"Gemma 3 vocabulary from tokenizer.json: {n_tok} tokens identical to llama.cpp")
