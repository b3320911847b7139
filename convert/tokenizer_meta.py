"""Tokenizer files of a Hugging Face folder -> the standard tokenizer.ggml.* keys,
the ones llama.cpp's convert_hf_to_gguf.py writes for the same folder.

- tokenizer.model (SentencePiece: LLaMA-2, MiniCPM, Gemma 3): tokenizer.ggml.model
  "llama", pieces, scores and types read with the sentencepiece package; added
  tokens from added_tokens.json and tokenizer_config.json's added_tokens_decoder;
  the space prefix from the model's normalizer (Gemma's has none).
- tokenizer.json byte-level BPE (GPT-2 style, SmolLM2, LLaMA-3, Qwen2/Qwen3): "gpt2",
  vocabulary and merges (no scores), plus the pre-tokenizer name the engine
  dispatches on (gpt-2, smollm, llama-bpe, qwen2).
- tokenizer.json BPE with byte fallback (LLaMA- or Gemma-style fast tokenizer
  without tokenizer.model): "llama", merge ranks as scores.
Added tokens are CONTROL when special (or named like one: <|...|>, <unused..>),
else USER_DEFINED with '▁' written as a space, as llama.cpp marks them.
Special token ids, add_bos/add_eos and the chat template come from
tokenizer_config.json / tokenizer.json / config.json through gguf.vocab.SpecialVocab.
"""
from __future__ import annotations

import json
from pathlib import Path

import gguf
from gguf.vocab import SpecialVocab

from .errors import ConvertError

# The GPT-2 style split with case-folded contractions of LLaMA-3's tokenizer.json
# (digits in groups of up to three), and Qwen2's (Qwen2.5, Qwen3): the same with
# single digits.
_LLAMA3_MARK = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
_QWEN2_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
                " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


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
        if pattern == _QWEN2_REGEX:
            return "qwen2"
    raise ConvertError(f"tokenizer.json: unsupported pre-tokenizer {kinds} "
                       "(supported: GPT-2 byte-level, SmolLM2 digits + byte-level, LLaMA-3 and Qwen2 splits)")


def looks_special(text: str) -> bool:
    """Added tokens llama.cpp makes CONTROL even when the folder does not mark them
    special: <|...|> names, Gemma's <unusedN>, <mask>, <2mass>, [@BOS@], <pad>."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<\uff5c") and text.endswith("\uff5c>"))
            or (text.startswith("<unused") and text.endswith(">")))


def _mark_added(tokens: list, types: list, scores: list | None, added: list[dict]) -> None:
    """Added tokens (tokenizer.json's added_tokens or tokenizer_config.json's
    added_tokens_decoder) by id: CONTROL if special, else USER_DEFINED with its
    '▁' pre-normalised to a space, since special tokens are matched in the raw text."""
    for at in added:
        i, text = at.get("id"), at.get("content")
        if not isinstance(i, int) or not isinstance(text, str) or not 0 <= i < len(tokens):
            continue
        if at.get("special") or looks_special(text):
            types[i] = gguf.TokenType.CONTROL
        else:
            text = text.replace("\u2581", " ")
            types[i] = gguf.TokenType.USER_DEFINED
        tokens[i] = text.encode("utf-8")
        if scores is not None:
            scores[i] = -1000.0


def _pad_vocab(tokens: list, scores: list | None, types: list, n_vocab: int, notes: list[str]) -> None:
    if len(tokens) > n_vocab:
        raise ConvertError(f"vocabulary size mismatch: the tokenizer has {len(tokens)} tokens, "
                           f"the model's embedding has {n_vocab} rows")
    if len(tokens) < n_vocab:
        notes.append(f"tokenizer has {len(tokens)} tokens, embedding {n_vocab}: padded with [PAD] tokens")
        for i in range(len(tokens), n_vocab):
            tokens.append(f"[PAD{i}]".encode())
            if scores is not None:
                scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)


def _by_id(ids: dict[str, int], what: str) -> list:
    """Token texts indexed by id; None where the files leave an id out."""
    n = max(ids.values()) + 1 if ids else 0
    tokens: list = [None] * n
    for t, i in ids.items():
        if not isinstance(i, int) or i < 0:
            raise ConvertError(f"{what}: bad token id {i!r} for {t!r}")
        tokens[i] = t
    return tokens


def _config_added(folder: Path) -> list[dict]:
    """tokenizer_config.json's added_tokens_decoder as a list of {id, content, special}."""
    p = folder / "tokenizer_config.json"
    if not p.is_file():
        return []
    dec = json.loads(p.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    return [{**v, "id": int(k)} for k, v in dec.items() if isinstance(v, dict)]


def _spm_dummy_prefix(sp) -> bool:
    """Whether a SentencePiece model prefixes '▁' to the text (its normalizer's
    add_dummy_prefix; Gemma's is off), seen from what it does to one letter."""
    pieces = sp.EncodeAsPieces("a")
    return bool(pieces) and pieces[0].startswith("\u2581")


def _sentencepiece(folder: Path, n_vocab: int, notes: list[str]) -> tuple[list, list, list, object]:
    """tokenizer.model pieces as llama.cpp reads them: every id up to the embedding
    size starts as [PAD{i}] (UNUSED, score -10000), then the model's pieces, then the
    added tokens of added_tokens.json (USER_DEFINED) and tokenizer_config.json."""
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    sp.LoadFromFile(str(folder / "tokenizer.model"))
    n_sp = sp.vocab_size()
    if n_sp > n_vocab:
        raise ConvertError(f"vocabulary size mismatch: the tokenizer has {n_sp} tokens, "
                           f"the model's embedding has {n_vocab} rows")
    if n_sp < n_vocab:
        notes.append(f"tokenizer has {n_sp} tokens, embedding {n_vocab}: padded with [PAD] tokens")
    tokens = [f"[PAD{i}]".encode() for i in range(n_vocab)]
    scores = [-10000.0] * n_vocab
    types = [gguf.TokenType.UNUSED] * n_vocab
    for i in range(n_sp):
        tokens[i] = sp.IdToPiece(i).encode("utf-8")
        scores[i] = sp.GetScore(i)
        types[i] = (gguf.TokenType.UNKNOWN if sp.IsUnknown(i) else gguf.TokenType.CONTROL if sp.IsControl(i)
                    else gguf.TokenType.UNUSED if sp.IsUnused(i) else gguf.TokenType.BYTE if sp.IsByte(i)
                    else gguf.TokenType.NORMAL)
    added_json = folder / "added_tokens.json"
    if added_json.is_file():
        for text, i in json.loads(added_json.read_text(encoding="utf-8")).items():
            if isinstance(i, int) and 0 <= i < n_vocab:
                tokens[i], scores[i], types[i] = text.encode("utf-8"), -1000.0, gguf.TokenType.USER_DEFINED
    _mark_added(tokens, types, scores, _config_added(folder))
    return tokens, scores, types, sp


def _byte_level_bpe(tj: dict) -> tuple[list, list]:
    """tokenizer.json byte-level BPE: vocabulary plus added tokens, by id."""
    ids = dict(tj["model"]["vocab"])
    added = tj.get("added_tokens", [])
    for at in added:
        ids.setdefault(at["content"], at["id"])
    tokens = _by_id(ids, "tokenizer.json")
    types = [gguf.TokenType.NORMAL if t is not None else gguf.TokenType.UNUSED for t in tokens]
    tokens = [t.encode("utf-8") if t is not None else f"[PAD{i}]".encode() for i, t in enumerate(tokens)]
    # Added tokens may live inside the base vocabulary (SmolLM2's <|im_start|>).
    _mark_added(tokens, types, None, added)
    return tokens, types


def _bytefallback_bpe(tj: dict) -> tuple[list, list, list]:
    """LLaMA-style BPE with byte fallback (tokenizer.json only) as SentencePiece-style
    pieces: llama.cpp's SPM tokenizer merges the pair with the highest score, HF's BPE
    the merge of lowest rank, so a merge's result scores -rank."""
    m = tj["model"]
    ids = dict(m["vocab"])
    for at in tj.get("added_tokens", []):
        ids.setdefault(at["content"], at["id"])
    tokens = _by_id(ids, "tokenizer.json")
    if any(t is None for t in tokens):
        raise ConvertError("tokenizer.json: token ids are not contiguous")
    n = len(tokens)
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
    tokens = [t.encode("utf-8") for t in tokens]
    _mark_added(tokens, types, scores, tj.get("added_tokens", []))
    return tokens, scores, types


def _metaspace_prefix(tj: dict) -> bool:
    """Whether the tokenizer prepends '▁' to the text (SentencePiece's dummy prefix):
    a Metaspace pre-tokenizer that prepends, or a Prepend('▁') normalizer (LLaMA-2's;
    Gemma's normalizer only replaces spaces)."""
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "Metaspace":
        return pre.get("prepend_scheme", "always") != "never" and pre.get("add_prefix_space", True)
    norm = tj.get("normalizer") or {}
    steps = norm.get("normalizers", [norm])
    return any(s.get("type") == "Prepend" and s.get("prepend") == "\u2581" for s in steps)


def _has_byte_level_post_processor(tj: dict) -> bool:
    post = tj.get("post_processor") or {}
    return any(p.get("type") == "ByteLevel" for p in post.get("processors", [post]))


def _prefix_override(folder: Path) -> bool | None:
    """tokenizer_config.json's add_prefix_space, which llama.cpp writes when present
    (it only matters to SentencePiece-style vocabularies)."""
    p = folder / "tokenizer_config.json"
    if not p.is_file():
        return None
    v = json.loads(p.read_text(encoding="utf-8")).get("add_prefix_space")
    return v if isinstance(v, bool) else None


def add_hf_tokenizer(gw: gguf.GGUFWriter, folder: Path, n_vocab: int, notes: list[str]) -> str:
    """Write tokenizer.ggml.* for the tokenizer in `folder`; returns a one-word kind."""
    folder = Path(folder)
    spm_path = folder / "tokenizer.model"
    json_path = folder / "tokenizer.json"
    sp = None
    try:
        if spm_path.is_file():
            kind, model, pre = "sentencepiece", "llama", "default"
            tokens, scores, types, sp = _sentencepiece(folder, n_vocab, notes)
        elif json_path.is_file():
            tj = json.loads(json_path.read_text(encoding="utf-8"))
            m = tj.get("model", {})
            if m.get("type") == "BPE" and not m.get("byte_fallback") and (tj.get("decoder") or {}).get("type") == "ByteLevel":
                kind, model, pre = "bpe", "gpt2", bpe_pre_tokenizer(tj)
                tokens, types = _byte_level_bpe(tj)
                scores = None   # byte-level BPE ranks by merges; llama.cpp writes no scores
            elif m.get("type") == "BPE" and m.get("byte_fallback"):
                kind, model, pre = "bpe-bytefallback", "llama", "default"
                tokens, scores, types = _bytefallback_bpe(tj)
            else:
                raise ConvertError(f"{json_path}: unsupported tokenizer model {m.get('type')!r}")
        else:
            raise ConvertError(f"{folder}: no tokenizer (tokenizer.model or tokenizer.json)")
        prefix_override = _prefix_override(folder)
    except ConvertError:
        raise
    except Exception as e:  # malformed files surface as many exception types
        raise ConvertError(f"{folder}: unreadable tokenizer ({type(e).__name__}: {e})") from None

    _pad_vocab(tokens, scores, types, n_vocab, notes)
    gw.add_tokenizer_model(model)
    gw.add_tokenizer_pre(pre)
    gw.add_token_list(tokens)
    if scores is not None:
        gw.add_token_scores(scores)
    gw.add_token_types([int(t) for t in types])

    special = SpecialVocab(folder, load_merges=(model == "gpt2"), n_vocab=n_vocab)
    if kind == "bpe" and _has_byte_level_post_processor(tj):
        # llama.cpp's converter: a ByteLevel post-processor (LLaMA-3, Qwen2) says "no BOS,
        # no EOS" unless a TemplateProcessing beside it adds them
        special.add_special_token.setdefault("bos", False)
        special.add_special_token.setdefault("eos", False)
    if kind == "sentencepiece":
        for typ, tid in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("unk", sp.unk_id()), ("pad", sp.pad_id())):
            if tid >= 0:
                special.special_token_ids.setdefault(typ, tid)
        special.add_special_token.setdefault("bos", True)   # LlamaTokenizer's default
        special.add_special_token.setdefault("eos", False)
        prefix = _spm_dummy_prefix(sp)
        gw.add_add_space_prefix(prefix if prefix_override is None else prefix_override)
    elif kind == "bpe-bytefallback":
        special.add_special_token.setdefault("bos", True)
        gw.add_add_space_prefix(_metaspace_prefix(tj) if prefix_override is None else prefix_override)
    special.add_to_gguf(gw, quiet=True)
    return kind
