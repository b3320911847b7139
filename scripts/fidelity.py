#!/usr/bin/env python3
"""Teacher-forced top-1 fidelity of our engine on a real llama GGUF file.

One ordinary English text is tokenized (llama.cpp's tokenizer when
llama-cpp-python is installed, else ours) and the first N tokens are run
through three forward passes, every position's logits kept:

  ours     prosparse_cpu.Model.eval_all (dense mode, batched prompt processing)
  llama    llama.cpp through llama-cpp-python (logits_all=True, same tokens)
  exact    the float64 numpy reference (prosparse_cpu.convert.reference) over
           the file's own dequantized weights, written independently of the C engine

and the argmax at each position compared pairwise. Near-ties flip under any
rounding, so agreement with llama.cpp alone cannot separate our error from
theirs: the exact reference does, and the positions where exact's top-2 margin
is large show whether the disagreements are near-ties.

--f32-check also runs a copy of the file dequantized to F32, where our kernels
round nothing: against the exact reference it isolates the forward pass.

    python scripts/fidelity.py [--model F.gguf] [--text FILE] [--tokens 2048]
                               [--f32-check] [--generate] [--json OUT]
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from prosparse_cpu.convert.reference import Reference

DEFAULT_MODEL = os.path.expanduser("~/.cache/prosparse-cpu/SmolLM2-135M-Instruct.Q4_1.gguf")


def default_text_path() -> str | None:
    """Ordinary English prose that ships with the machine: Python's LICENSE
    (its history section and license terms), else pip's user guide."""
    candidates = sorted(glob.glob("/usr/lib/python3*/LICENSE.txt"))
    candidates += ["/usr/share/doc/python3-pip/html/user_guide.rst.gz"]
    for c in candidates:
        if os.path.exists(c):
            return c
    return None


def read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


# Positions whose exact top-2 logit gap exceeds this are not near-ties: both
# engines' logits differ from the exact ones by ~0.25 rms on SmolLM2 Q4_1.
CLEAR_MARGIN = 0.5
# Positions whose full logits are compared (rms distance between engines).
SAMPLE_ROWS = 256


# ---- the exact float64 reference ------------------------------------------------

def exact_top2(model: str, tokens, chunk: int = 256, progress=None):
    """(argmax, margin between the two largest logits) of the float64 reference
    at every position, and the full logits of the first SAMPLE_ROWS positions."""
    ref = Reference.from_gguf(model)
    hid = ref.hidden([list(tokens)], progress=progress)[0]
    top, margin, sample = [], [], None
    for i in range(0, len(tokens), chunk):
        lg = ref.logits(hid[i:i + chunk])
        part = np.partition(lg, -2, axis=1)[:, -2:]
        top.append(lg.argmax(axis=1))
        margin.append(part[:, 1] - part[:, 0])
        if sample is None:
            sample = lg[:SAMPLE_ROWS]
    return np.concatenate(top), np.concatenate(margin), sample


def write_f32_copy(src: str, dst: str) -> str:
    """The same model with every tensor dequantized to F32 (gguf-py): our
    engine runs it without activation quantization, so comparing it with the
    exact reference isolates the forward pass from the kernels' rounding."""
    import gguf

    r = gguf.GGUFReader(src)
    w = gguf.GGUFWriter(dst, r.fields["general.architecture"].contents())
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
            continue
        sub = f.types[1] if f.types[0] == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, f.contents(), f.types[0], sub)
    for t in r.tensors:
        w.add_tensor(t.name, np.ascontiguousarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return dst


# ---- the engines ----------------------------------------------------------------

def ours_top1(path, tokens, threads, n_batch=512):
    from prosparse_cpu import Model

    with Model(path, threads=threads, n_ctx=len(tokens), n_batch=n_batch) as m:
        t0 = time.perf_counter()
        logits = m.eval_all(tokens)
        dt = time.perf_counter() - t0
    return logits.argmax(axis=1), logits[:SAMPLE_ROWS].copy(), dt


def llama_cpp_top1(path, tokens, threads):
    from llama_cpp import Llama

    llm = Llama(model_path=path, n_ctx=len(tokens), n_batch=512, n_threads=threads,
                n_threads_batch=threads, logits_all=True, verbose=False)
    t0 = time.perf_counter()
    llm.eval(tokens)
    dt = time.perf_counter() - t0
    scores = np.asarray(llm.scores[:len(tokens)])
    top, sample = scores.argmax(axis=1), scores[:SAMPLE_ROWS].copy()
    del llm
    return top, sample, dt


def tokenize(path, text, n):
    """The first n tokens of text, with llama.cpp's tokenizer if available."""
    try:
        from llama_cpp import Llama

        llm = Llama(model_path=path, vocab_only=True, verbose=False)
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
        source = "llama.cpp"
    except ImportError:
        from prosparse_cpu import Model

        with Model(path, threads=1, n_ctx=16) as m:
            ids = m.tokenize(text, add_bos=m.add_bos, special=False)
        source = "prosparse"
    if len(ids) < n:
        raise SystemExit(f"text has only {len(ids)} tokens, need {n}")
    return list(ids[:n]), source


def measure(model: str, text_path: str, n_tokens: int, threads: int, use_llama: bool = True,
            f32_check: bool = False, log=print) -> dict:
    text = read_text(text_path)
    tokens, tok_source = tokenize(model, text, n_tokens)
    log(f"{n_tokens} tokens of {text_path} (tokenized by {tok_source})")

    ours, ours_lg, t_ours = ours_top1(model, tokens, threads)
    log(f"ours: {t_ours:.1f} s")
    res = {"model": model, "text": text_path, "positions": n_tokens, "tokenizer": tok_source,
           "threads": threads}
    if use_llama:
        try:
            llama, llama_lg, t_llama = llama_cpp_top1(model, tokens, threads)
            log(f"llama.cpp: {t_llama:.1f} s")
        except ImportError:
            llama = None
            log("llama-cpp-python is not installed: no llama.cpp comparison")
    else:
        llama = None
    ours_f32 = None
    if f32_check:  # the same weights in F32: no activation rounding in our kernels
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            ours_f32, _, _ = ours_top1(write_f32_copy(model, os.path.join(tmp, "f32.gguf")), tokens, threads)

    t0 = time.perf_counter()
    exact, margin, exact_lg = exact_top2(
        model, tokens, progress=lambda i, n: log(f"\rexact float64 reference: layer {i}/{n}", end="") if i < n else log(""))
    log(f"exact: {time.perf_counter() - t0:.1f} s")

    agree = lambda a, b: float(np.mean(a == b))  # noqa: E731
    res["ours_vs_exact"] = agree(ours, exact)
    clear = margin > CLEAR_MARGIN
    res["clear_positions"] = int(clear.sum())
    res["ours_vs_exact_clear"] = agree(ours[clear], exact[clear])
    if ours_f32 is not None:
        res["ours_f32_copy_vs_exact"] = agree(ours_f32, exact)
    rms = lambda a, b: float(np.sqrt(np.mean((np.asarray(a, np.float64) - b) ** 2)))  # noqa: E731
    res["logit_rms_rows"] = len(exact_lg)
    res["logit_rms_ours_vs_exact"] = rms(ours_lg, exact_lg)
    if llama is not None:
        res["ours_vs_llama"] = agree(ours, llama)
        res["llama_vs_exact"] = agree(llama, exact)
        res["llama_vs_exact_clear"] = agree(llama[clear], exact[clear])
        res["ours_vs_llama_clear"] = agree(ours[clear], llama[clear])
        res["logit_rms_llama_vs_exact"] = rms(llama_lg, exact_lg)
        res["logit_rms_ours_vs_llama"] = rms(ours_lg, llama_lg)
        res["ours_time_s"], res["llama_time_s"] = t_ours, t_llama
    return res


def _greedy(eval_fn, logits_fn, is_eog, ids, max_tokens):
    out = []
    eval_fn(ids)
    for _ in range(max_tokens):
        t = int(np.argmax(logits_fn()))
        if is_eog(t):
            break
        out.append(t)
        eval_fn([t])
    return out


def greedy_pair(model: str, prompt: str, threads: int = 2, max_tokens: int = 48):
    """Greedy continuations of one chat prompt, from the same token ids, by ours
    and (if installed) llama.cpp: (prompt ids, our ids, our text, llama ids, llama text);
    the last two None without llama-cpp-python."""
    from prosparse_cpu import Model
    from prosparse_cpu.chat import render_chat

    with Model(model, threads=threads, n_ctx=512) as m:
        ids = m.tokenize_prompt(render_chat(m, [{"role": "user", "content": prompt}]))
        ours = _greedy(m.eval, m.logits, m.is_eog, ids, max_tokens)
        res = [ids, ours, m.detokenize(ours), None, None]
        try:
            from llama_cpp import Llama
        except ImportError:
            return tuple(res)
        llm = Llama(model_path=model, n_ctx=512, n_threads=threads, n_threads_batch=threads,
                    logits_all=True, verbose=False)
        theirs = _greedy(llm.eval, lambda: llm.scores[llm.n_tokens - 1], m.is_eog, ids, max_tokens)
        res[3:] = [theirs, m.detokenize(theirs)]
        del llm
    return tuple(res)


def greedy_gaps(model: str, prompt_ids, generated) -> np.ndarray:
    """For each generated token, how far its exact logit is below the exact
    maximum at that step (0 where the engine picked the exact top-1): one
    exact forward over prompt + generation, teacher-forced on our choices."""
    ref = Reference.from_gguf(model)
    seq = list(prompt_ids) + list(generated)
    lg = ref.logits(ref.hidden([seq[:-1]])[0][len(prompt_ids) - 1:])
    return lg.max(axis=1) - lg[np.arange(len(generated)), generated]


PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.",
           "In two sentences, why is the sky blue?"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.environ.get("PROSPARSE_SMOLLM2", DEFAULT_MODEL))
    ap.add_argument("--text", default=default_text_path())
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-llama", action="store_true", help="skip llama.cpp")
    ap.add_argument("--generate", action="store_true", help="also print greedy chat answers")
    ap.add_argument("--f32-check", action="store_true",
                    help="also run a dequantized F32 copy of the model (isolates the forward pass)")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args(argv)
    if not a.text or not os.path.exists(a.text):
        ap.error("no text file found; pass --text")
    if not os.path.exists(a.model):
        ap.error(f"model not found: {a.model}")
    res = measure(a.model, a.text, a.tokens, a.threads, use_llama=not a.no_llama, f32_check=a.f32_check,
                  log=lambda *s, end="\n": print(*s, end=end, file=sys.stderr, flush=True))
    for k in ("ours_vs_llama", "ours_vs_exact", "llama_vs_exact"):
        if k in res:
            print(f"{k:16s} {100 * res[k]:6.2f}%  ({res['positions']} positions; on the "
                  f"{res['clear_positions']} with exact top-2 margin > {CLEAR_MARGIN}: {100 * res[k + '_clear']:.2f}%)")
    if "ours_f32_copy_vs_exact" in res:
        print(f"dequantized F32 copy, ours vs exact: {100 * res['ours_f32_copy_vs_exact']:.2f}%")
    for k in ("ours_vs_exact", "llama_vs_exact", "ours_vs_llama"):
        if f"logit_rms_{k}" in res:
            print(f"logit rms {k:16s} {res[f'logit_rms_{k}']:.4f}  (first {res['logit_rms_rows']} positions)")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    if a.generate:
        for p in PROMPTS:
            _, ours, text, theirs, their_text = greedy_pair(a.model, p, a.threads)
            print(f"ours      | {p} -> {text!r}")
            if theirs is not None:
                print(f"llama.cpp | {'(same tokens)' if theirs == ours else repr(their_text)}")


if __name__ == "__main__":
    main()
