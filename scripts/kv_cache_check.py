"""How much the KV cache type changes a model's output: logits and perplexity
of the f16 and q8_0 caches against the exact f32 one, on ordinary prose.

    python scripts/kv_cache_check.py [MODEL.gguf] [--text FILE] [--ctx 512] [--windows 4]

Prints, for each type, the largest logit change relative to the largest
|logit| (max rel), the rms change relative to the rms logit (rms rel), the
top-1 agreement with f32 and the perplexity (llama-perplexity's windows).
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from fidelity import DEFAULT_MODEL, default_text_path, read_text  # noqa: E402

from prosparse_cpu import Model  # noqa: E402
from prosparse_cpu.perplexity import perplexity  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--text", default=None, help="held-out text (default: Python's LICENSE)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    text_path = a.text or default_text_path()
    if not text_path:
        sys.exit("error: no text found; pass --text")
    text = read_text(text_path)
    rows = {}
    for t in ("f32", "f16", "q8_0"):
        with Model(a.model, threads=a.threads, n_ctx=a.ctx, n_batch=min(a.ctx, 512), cache_type=t) as m:
            ids = m.tokenize(text, add_bos=False)[:a.ctx]
            logits = m.eval_all(ids)
            res = perplexity(m, text, n_ctx=a.ctx, max_windows=a.windows)
            rows[t] = (logits, res, m.kv_bytes)
    ref, ref_ppl = rows["f32"][0], rows["f32"][1].ppl
    print(f"{os.path.basename(a.model)}, text {text_path}, window {a.ctx}, {rows['f32'][1].n_tokens_scored} tokens scored")
    for t, (lo, res, kv) in rows.items():
        d = lo.astype(np.float64) - ref
        max_rel = np.abs(d).max() / np.abs(ref).max()
        rms_rel = np.sqrt((d ** 2).mean() / (ref.astype(np.float64) ** 2).mean())
        top1 = (lo.argmax(-1) == ref.argmax(-1)).mean()
        print(f"  {t:5s} KV {kv / 2**20:7.2f} MiB at n_ctx {a.ctx}: max rel {max_rel:.2e}  rms rel {rms_rel:.2e}  "
              f"top-1 {top1 * 100:.2f}%  PPL {res.ppl:.4f} ({(res.ppl / ref_ppl - 1) * 100:+.3f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
