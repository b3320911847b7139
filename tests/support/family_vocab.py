"""Tiny Hugging Face tokenizer folders shaped like the newer families' own,
trained here on the standard library's docstrings (plus a few lines of other
scripts, so multi-byte merges exist):

- `make_llama3_tokenizer`: byte-level BPE with LLaMA-3's split regex (digits in
  threes), ignore_merges, its specials appended after the vocabulary, BOS added
  by a TemplateProcessing post-processor.
- `make_qwen2_tokenizer`: byte-level BPE with Qwen2's split (single digits), an
  NFC normaliser, a ByteLevel post-processor, ChatML specials, and added tokens not marked special
  (<|fim_prefix|>, which llama.cpp still makes CONTROL, and <tool_call>).
- `make_gemma_tokenizer`: a SentencePiece BPE with byte fallback, no dummy
  prefix and no whitespace squeezing, Gemma's special layout (pad 0, eos 1,
  bos 2, unk 3), turn markers, and tokenizer_config.json's added_tokens_decoder;
  `make_gemma_json_tokenizer`: the same as transformers saves it, tokenizer.json only.

Each returns the vocabulary size; the regexes are the split patterns written
in those families' tokenizer.json files.
"""
from __future__ import annotations

import json
from pathlib import Path

from prosparse_cpu.chat import CHATML_TEMPLATE as CHATML
from .vocab import corpus_text

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# A LLaMA-3 style template (header markers around the role, <|eot_id|> after each turn).
LLAMA3_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
                   "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
                   "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' "
                  "else m['role'] }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
                  "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

EXTRA_LINES = [
    "中文测试：你好，世界！日本語のテキストです。한국어 문장입니다.",
    "café naïve résumé Straße Ångström — Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم",
    "emoji 😀🎉👍🏽 ❤️ 🇫🇷 numbers 1234567890 3.14159 2026-11-29",
    "def f(x):\n\treturn x ** 2  # it's, we'll, they're, I'M, DON'T\n\n\n",
]


def training_lines() -> list[str]:
    return [corpus_text()] + EXTRA_LINES * 20


def _added_decoder(entries: list[tuple[int, str, bool]]) -> dict:
    return {str(i): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": sp} for i, t, sp in entries}


def _byte_level(folder: Path, regex: str, vocab_size: int, ignore_merges: bool, nfc: bool):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    if nfc:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(training_lines(), trainer=trainer)
    folder.mkdir(parents=True, exist_ok=True)
    return tok


def make_llama3_tokenizer(folder: Path, vocab_size: int = 1200) -> int:
    from tokenizers import AddedToken, processors
    tok = _byte_level(folder, LLAMA3_REGEX, vocab_size, ignore_merges=True, nfc=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIALS])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "model_max_length": 131072, "chat_template": LLAMA3_TEMPLATE,
        "added_tokens_decoder": _added_decoder([(tok.token_to_id(t), t, True) for t in LLAMA3_SPECIALS])}))
    return tok.get_vocab_size()


def make_qwen2_tokenizer(folder: Path, vocab_size: int = 1200) -> int:
    from tokenizers import AddedToken
    from tokenizers import processors
    tok = _byte_level(folder, QWEN2_REGEX, vocab_size, ignore_merges=False, nfc=True)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    specials = [("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
                ("<|fim_prefix|>", False), ("<tool_call>", False)]
    for t, sp in specials:
        tok.add_tokens([AddedToken(t, special=sp, normalized=False)])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>", "unk_token": None, "add_prefix_space": False, "errors": "replace",
        "chat_template": CHATML,
        "added_tokens_decoder": _added_decoder([(tok.token_to_id(t), t, sp) for t, sp in specials])}))
    return tok.get_vocab_size()


# As in Gemma 3's files: <mask> and <unusedN> are not marked special but llama.cpp
# makes them CONTROL by name; [multimodal], whitespace runs and HTML tags stay
# USER_DEFINED; the turn markers are special.
GEMMA_CONTROL = ["<mask>"]
GEMMA_USER = ["[multimodal]", "<start_of_turn>", "<end_of_turn>", "<unused0>", "<unused1>", "\u2581\u2581\u2581", "<h1>"]
GEMMA_SPECIAL = {"<start_of_turn>", "<end_of_turn>"}   # special in tokenizer_config.json


def make_gemma_tokenizer(folder: Path, vocab_size: int = 1200) -> int:
    import io
    import sentencepiece as spm
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([ln for text in training_lines() for ln in text.splitlines() if ln.strip()]),
        model_writer=buf, model_type="bpe", vocab_size=vocab_size, byte_fallback=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
        allow_whitespace_only_pieces=True, split_digits=True, character_coverage=1.0, minloglevel=2,
        num_threads=1, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", control_symbols=GEMMA_CONTROL, user_defined_symbols=GEMMA_USER)
    (folder / "tokenizer.model").write_bytes(buf.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    entries = [(i, sp.id_to_piece(i), True) for i in range(4)]
    entries += [(sp.piece_to_id(t), t, t in GEMMA_SPECIAL) for t in GEMMA_CONTROL + GEMMA_USER]
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
        "chat_template": GEMMA_TEMPLATE, "added_tokens_decoder": _added_decoder(entries)}))
    return sp.get_piece_size()


def make_gemma_json_tokenizer(folder: Path, vocab_size: int = 1200) -> int:
    """make_gemma_tokenizer's vocabulary as transformers saves a Gemma tokenizer
    (tokenizer.json: BPE with byte fallback, spaces replaced by '▁', no prefix;
    chat_template.jinja), without tokenizer.model."""
    import shutil
    from transformers import AutoTokenizer
    spm_dir = folder.parent / (folder.name + "-spm")
    make_gemma_tokenizer(spm_dir, vocab_size)
    tok = AutoTokenizer.from_pretrained(str(spm_dir))
    tok.save_pretrained(str(folder))
    shutil.rmtree(spm_dir)
    assert not (folder / "tokenizer.model").exists()
    return len(tok)
