"""Tokenizer files of a Hugging Face folder -> the standard tokenizer.ggml.* keys.

- tokenizer.model (SentencePiece, LLaMA-2 / MiniCPM): tokenizer.ggml.model "llama",
  pieces, scores and types read with the sentencepiece package (gguf.vocab).
- tokenizer.json byte-level BPE (GPT-2 style, SmolLM2, LLaMA-3): "gpt2",
  vocabulary and merges, plus the pre-tokenizer name the engine dispatches on.
- tokenizer.json BPE with byte fallback (LLaMA-style fast tokenizer): "llama".
Special tokens, add_bos/add_eos and the chat template come from
tokenizer_config.json / config.json through gguf.vocab.SpecialVocab.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
from gguf.vocab import BpeVocab, SentencePieceVocab, SpecialVocab

from .errors import ConvertError

# The GPT-2 style split with contractions, as in LLaMA-3's tokenizer.json.
_LLAMA3_MARK = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"


def bpe_pre_tokenizer(tok_json: dict) -> str:
    """Name (llama.cpp's convention) of a byte-level BPE pre-tokenizer."""
    pre = tok_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # llama.cpp's name; "gpt2" makes it refuse the file
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex", "")
        if pattern.startswith(_LLAMA3_MARK):
            return "llama-bpe"
    raise ConvertError(f"tokenizer.json: unsupported pre-tokenizer {kinds} "
                       "(supported: GPT-2 byte-level, SmolLM2 digits + byte-level, LLaMA-3 split)")


def _pad_vocab(tokens: list, scores: list, types: list, n_vocab: int, notes: list[str]) -> None:
    if len(tokens) > n_vocab:
        raise ConvertError(f"vocabulary size mismatch: the tokenizer has {len(tokens)} tokens, "
                           f"the model's embedding has {n_vocab} rows")
    if len(tokens) < n_vocab:
        notes.append(f"tokenizer has {len(tokens)} tokens, embedding {n_vocab}: padded with [PAD] tokens")
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)


def _spm_normalizer(model_path: Path) -> tuple[bool, bool]:
    """(add_dummy_prefix, remove_extra_whitespaces) of a SentencePiece model."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
    except ImportError:  # protobuf missing: SentencePiece's own defaults
        return True, True
    m = pb.ModelProto()
    m.ParseFromString(model_path.read_bytes())
    return bool(m.normalizer_spec.add_dummy_prefix), bool(m.normalizer_spec.remove_extra_whitespaces)


def _bytefallback_bpe(tj: dict) -> tuple[list, list, list]:
    """LLaMA-style BPE with byte fallback (tokenizer.json only) as SentencePiece-style
    pieces: llama.cpp's SPM tokenizer merges the pair with the highest score, HF's BPE
    the merge of lowest rank, so a merge's result scores -rank."""
    m = tj["model"]
    ids = dict(m["vocab"])
    for at in tj.get("added_tokens", []):
        ids.setdefault(at["content"], at["id"])
    n = max(ids.values()) + 1
    tokens: list = [None] * n
    for t, i in ids.items():
        tokens[i] = t
    if any(t is None for t in tokens):
        raise ConvertError("tokenizer.json: token ids are not contiguous")
    scores = [0.0] * n
    for rank, merge in enumerate(m.get("merges", [])):
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        i = ids.get(a + b)
        if i is not None and scores[i] == 0.0:
            scores[i] = -float(rank + 1)
    types = [gguf.TokenType.NORMAL] * n
    for i, t in enumerate(tokens):
        if len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types[i] = gguf.TokenType.BYTE
    if m.get("unk_token") in ids:
        types[ids[m["unk_token"]]] = gguf.TokenType.UNKNOWN
    for at in tj.get("added_tokens", []):
        types[at["id"]] = gguf.TokenType.CONTROL if at.get("special") else gguf.TokenType.USER_DEFINED
    return [t.encode("utf-8") for t in tokens], scores, types


def _metaspace_prefix(tj: dict) -> bool:
    """Whether the tokenizer prepends '▁' to the text (SentencePiece's dummy prefix)."""
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace":
        return pre.get("prepend_scheme", "always") != "never" and pre.get("add_prefix_space", True)
    norm = tj.get("normalizer") or {}
    steps = norm.get("normalizers", [norm])
    return any(s.get("type") == "Prepend" and s.get("prepend") == "\u2581" or s.get("prepend") == "▁" for s in steps)


def add_hf_tokenizer(gw: gguf.GGUFWriter, folder: Path, n_vocab: int, notes: list[str]) -> str:
    """Write tokenizer.ggml.* for the tokenizer in `folder`; returns a one-word kind."""
    folder = Path(folder)
    spm_path = folder / "tokenizer.model"
    json_path = folder / "tokenizer.json"
    try:
        if spm_path.is_file():
            vocab = SentencePieceVocab(folder)
            kind, model, pre = "sentencepiece", "llama", "default"
        elif json_path.is_file():
            tj = json.loads(json_path.read_text(encoding="utf-8"))
            m = tj.get("model", {})
            if m.get("type") == "BPE" and not m.get("byte_fallback") and (tj.get("decoder") or {}).get("type") == "ByteLevel":
                vocab = BpeVocab(folder)
                kind, model, pre = "bpe", "gpt2", bpe_pre_tokenizer(tj)
            elif m.get("type") == "BPE" and m.get("byte_fallback"):
                vocab = None
                kind, model, pre = "bpe-bytefallback", "llama", "default"
            else:
                raise ConvertError(f"{json_path}: unsupported tokenizer model {m.get('type')!r}")
        else:
            raise ConvertError(f"{folder}: no tokenizer (tokenizer.model or tokenizer.json)")
        if vocab is None:
            tokens, scores, types = _bytefallback_bpe(tj)
        else:
            tokens, scores, types = [], [], []
            for text, score, ttype in vocab.all_tokens():
                tokens.append(text)
                scores.append(float(score))
                types.append(ttype)
    except ConvertError:
        raise
    except Exception as e:  # malformed files surface as many exception types
        raise ConvertError(f"{folder}: unreadable tokenizer ({type(e).__name__}: {e})") from None

    if kind == "bpe":
        # Added tokens may live inside the base vocabulary (SmolLM2's <|im_start|>):
        # mark them as llama.cpp does, CONTROL if special, else USER_DEFINED.
        for at in tj.get("added_tokens", []):
            i = at.get("id")
            if isinstance(i, int) and 0 <= i < len(types):
                types[i] = gguf.TokenType.CONTROL if at.get("special") else gguf.TokenType.USER_DEFINED

    _pad_vocab(tokens, scores, types, n_vocab, notes)
    gw.add_tokenizer_model(model)
    gw.add_tokenizer_pre(pre)
    gw.add_token_list(tokens)
    gw.add_token_scores(scores)
    gw.add_token_types([int(t) for t in types])

    special = SpecialVocab(folder, load_merges=(model == "gpt2"), n_vocab=n_vocab)
    if kind == "sentencepiece":
        sp = vocab.sentencepiece_tokenizer
        for typ, tid in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()), ("pad", sp.pad_id())):
            if tid >= 0:
                special.special_token_ids.setdefault(typ, tid)
        special.add_special_token.setdefault("bos", True)   # LlamaTokenizer's default
        special.add_special_token.setdefault("eos", False)
        prefix, squeeze = _spm_normalizer(spm_path)
        gw.add_add_space_prefix(prefix)
        gw.add_remove_extra_whitespaces(squeeze)
    if kind == "bpe-bytefallback":
        special.add_special_token.setdefault("bos", True)
        gw.add_add_space_prefix(_metaspace_prefix(tj))
        gw.add_remove_extra_whitespaces(False)
    special.add_to_gguf(gw, quiet=True)
    return kind
