"""Text -> token ids -> fixed-length sequences, with a held-out split and a resumable order.

Inputs: files or folders of plain text (.txt .md .rst, anything not .jsonl) and
JSONL files whose lines hold {"text": ...} or {"messages": [...]} (rendered
with the tokenizer's chat template). Documents are tokenized, joined with EOS,
and cut into sequences of seq_len tokens; the *last* sequences are held out.

Training order is a pure function of (seed, sample index): sample k of the run
is sequence perm_{k // n}[k % n] where perm_e is a seeded permutation for epoch
e. Step s of a run with global batch G uses samples [s*G, (s+1)*G), so the data
position of a resumed run is just the step number.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ConfigError

TEXT_SUFFIXES_SKIP = {".pt", ".bin", ".safetensors", ".gguf", ".png", ".jpg", ".gz", ".zip"}


def list_files(paths) -> list[Path]:
    files = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix not in TEXT_SUFFIXES_SKIP)
        elif p.is_file():
            files.append(p)
        else:
            raise ConfigError(f"data file or folder not found: {p}")
    if not files:
        raise ConfigError(f"no data files in {', '.join(map(str, paths)) or '(data.train is empty)'}")
    return files


def read_documents(files, tokenizer):
    """Yield one string per document."""
    for f in files:
        if f.suffix == ".jsonl":
            with open(f, encoding="utf-8") as fh:
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ConfigError(f"{f}:{n}: not valid JSON ({e.msg})") from None
                    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
                        yield obj["text"]
                    elif isinstance(obj, dict) and isinstance(obj.get("messages"), list):
                        if not getattr(tokenizer, "chat_template", None):
                            raise ConfigError(f"{f}:{n}: chat 'messages' but the tokenizer has no chat template")
                        yield tokenizer.apply_chat_template(obj["messages"], tokenize=False)
                    else:
                        raise ConfigError(f"{f}:{n}: each JSONL line needs a 'text' string or a 'messages' list")
        else:
            try:
                yield f.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ConfigError(f"{f}: not UTF-8 text") from None


def fingerprint(files, tokenizer, add_eos: bool, max_tokens: int) -> str:
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    h.update(f"{type(tokenizer).__name__}|{len(tokenizer)}|{tokenizer.eos_token_id}|{add_eos}|{max_tokens}".encode())
    return h.hexdigest()[:16]


def tokenize_files(paths, tokenizer, add_eos=True, max_tokens=0, cache_dir=None) -> torch.Tensor:
    """All documents as one 1-D int32 token stream (cached under cache_dir when given)."""
    files = list_files(paths)
    cache = None
    if cache_dir:
        cache = Path(cache_dir) / f"tokens-{fingerprint(files, tokenizer, add_eos, max_tokens)}.pt"
        if cache.is_file():
            return torch.load(cache)
    eos = tokenizer.eos_token_id
    chunks, total = [], 0
    for doc in read_documents(files, tokenizer):
        if not doc.strip():
            continue
        ids = tokenizer(doc, add_special_tokens=False)["input_ids"]
        if add_eos and eos is not None:
            ids = ids + [eos]
        chunks.append(torch.tensor(ids, dtype=torch.int32))
        total += len(ids)
        if max_tokens and total >= max_tokens:
            break
    if not chunks:
        raise ConfigError(f"the data in {', '.join(map(str, paths))} is empty")
    stream = torch.cat(chunks)
    if max_tokens:
        stream = stream[:max_tokens]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".tmp{os.getpid()}")
        torch.save(stream, tmp)
        os.replace(tmp, cache)
    return stream


@dataclass
class PackedData:
    train: torch.Tensor    # [n_train, seq_len] int64
    heldout: torch.Tensor  # [n_heldout, seq_len] int64
    seed: int

    def sample_ids(self, first: int, count: int) -> torch.Tensor:
        """Sequence indices of global samples first .. first+count-1 (deterministic)."""
        n = self.train.shape[0]
        out, k = [], first
        while len(out) < count:
            epoch, offset = divmod(k, n)
            perm = self._perm(epoch)
            take = min(count - len(out), n - offset)
            out += perm[offset:offset + take].tolist()
            k += take
        return torch.tensor(out, dtype=torch.long)

    def _perm(self, epoch: int) -> torch.Tensor:
        cached = getattr(self, "_cache", None)
        if cached is None or cached[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1000003 + epoch)
            self._cache = (epoch, torch.randperm(self.train.shape[0], generator=g))
        return self._cache[1]

    def batch(self, first: int, count: int) -> torch.Tensor:
        return self.train[self.sample_ids(first, count)]


def pack(stream: torch.Tensor, seq_len: int, heldout_fraction: float, heldout_max: int,
         min_train: int, seed: int) -> PackedData:
    """Cut the stream into sequences; error unless there is >= 1 held-out and >= min_train training ones."""
    n = stream.numel() // seq_len
    n_held = max(1, min(heldout_max, round(n * heldout_fraction))) if heldout_max > 0 else max(1, round(n * heldout_fraction))
    if n - n_held < min_train:
        raise ConfigError(f"data too short: {stream.numel()} tokens make {n} sequences of {seq_len}; "
                          f"need {min_train} for one optimizer step plus {n_held} held out")
    seqs = stream[: n * seq_len].view(n, seq_len).long()
    return PackedData(train=seqs[: n - n_held], heldout=seqs[n - n_held:], seed=seed)


def load_tokenizer(model_path: str):
    """AutoTokenizer for an HF folder or a .gguf file (transformers' GGUF loader)."""
    from transformers import AutoTokenizer

    p = Path(model_path)
    if p.suffix == ".gguf":
        tok = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
    else:
        tok = AutoTokenizer.from_pretrained(str(p))
    return tok
