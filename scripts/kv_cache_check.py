"""How much the KV cache type changes a model's output: logits and perplexity
of the f16 and q8_0 caches against the exact f32 one, on ordinary prose.

    python scripts/kv_cache_check.py [MODEL.gguf] [--text FILE] [--ctx 512] [--windows 4] [--float-copy]

Prints, for each type, against f32 on the first --ctx tokens of the text:
  max rel  the largest logit change over every position and vocabulary entry,
           relative to the largest |logit| anywhere (one number for the text);
  rms rel  ||dlogits|| / ||logits|| over all positions together (Frobenius);
  per position p: max_v |d[p,v]| / max_v |ref[p,v]| and ||d[p]|| / ||ref[p]||,
           each as median / 99th percentile / max over the positions;
then the top-1 agreement with f32 and the perplexity (llama-perplexity's
windows), its change against f32 and that change's standard error over the
scored tokens (paired: the same tokens under both caches).

The f16 cache differs from f32 in storage alone: each K/V element is
rounded once to the nearest half (ties to even, as F16C's vcvtps2ph does),
and the query, the scores, the softmax and the sums over V stay f32 in both,
in the same order (native/attention.h), so what f16 shows here is what
rounding K/V to 11 significant bits costs.

On a file with quantized weights the matrix products quantize their
activations, a rounding that turns any change upstream, however small,
into a new draw of the rounding error downstream: K/V rounded to 22 bits
instead of 24 already moves SmolLM2 Q4_1's perplexity on 1020 tokens by
+0.4%, as much as the f16 cache does. A change within about two standard
errors is that noise; --float-copy measures again on a copy of the file
with every tensor dequantized to F32 (float activations, no such noise),
which isolates what the cache type itself costs.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from fidelity import DEFAULT_MODEL, default_text_path, read_text, write_f32_copy  # noqa: E402

from prosparse_cpu import Model  # noqa: E402
from prosparse_cpu.perplexity import perplexity  # noqa: E402


def dist(x: np.ndarray) -> str:
    return " / ".join(f"{v:.2e}" for v in (np.median(x), np.percentile(x, 99), x.max()))


def check(model: str, text: str, ctx: int, windows: int, threads: int) -> None:
    rows = {}
    for t in ("f32", "f16", "q8_0"):
        with Model(model, threads=threads, n_ctx=ctx, n_batch=min(ctx, 512), cache_type=t) as m:
            ids = m.tokenize(text, add_bos=False)[:ctx]
            logits = m.eval_all(ids)
            res = perplexity(m, text, n_ctx=ctx, max_windows=windows)
            rows[t] = (logits, res, m.kv_bytes)
    ref, ref_res = rows["f32"][0], rows["f32"][1]
    print(f"{os.path.basename(model)}, window {ctx}, {ref_res.n_tokens_scored} tokens scored")
    for t, (lo, res, kv) in rows.items():
        d = lo.astype(np.float64) - ref
        max_rel = np.abs(d).max() / np.abs(ref).max()
        rms_rel = np.sqrt((d ** 2).mean() / (ref.astype(np.float64) ** 2).mean())
        r64 = ref.astype(np.float64)
        pos_max = np.abs(d).max(-1) / np.abs(r64).max(-1)
        pos_norm = np.linalg.norm(d, axis=-1) / np.linalg.norm(r64, axis=-1)
        top1 = (lo.argmax(-1) == ref.argmax(-1)).mean()
        dn = res.nll - ref_res.nll  # paired: the same tokens under both caches
        se = dn.std(ddof=1) / math.sqrt(len(dn)) if len(dn) > 1 else 0.0
        print(f"  {t:5s} KV {kv / 2**20:7.2f} MiB at n_ctx {ctx}: max rel {max_rel:.2e}  rms rel {rms_rel:.2e}  "
              f"top-1 {top1 * 100:.2f}%  PPL {res.ppl:.4f} ({(res.ppl / ref_res.ppl - 1) * 100:+.3f}%"
              f" +- {se * 100:.3f}%)")
        if t != "f32":
            print(f"        per position ({len(d)}), median / p99 / max:  max rel {dist(pos_max)}  "
                  f"norm rel {dist(pos_norm)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", default=DEFAULT_MODEL)
    ap.add_argument("--text", default=None, help="held-out text (default: Python's LICENSE)")
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--float-copy", action="store_true",
                    help="also measure an F32 copy of the weights (the cache's own effect)")
    a = ap.parse_args()
    text_path = a.text or default_text_path()
    if not text_path:
        sys.exit("error: no text found; pass --text")
    text = read_text(text_path)
    print(f"text {text_path}")
    check(a.model, text, a.ctx, a.windows, a.threads)
    if a.float_copy:
        with tempfile.TemporaryDirectory() as tmp:
            copy = write_f32_copy(a.model, os.path.join(tmp, "f32-" + os.path.basename(a.model)))
            check(copy, text, a.ctx, a.windows, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
