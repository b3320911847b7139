"""The new families as llama.cpp's own converter (convert_hf_to_gguf.py) writes
them, and llama.cpp (llama-cpp-python) on those files and on ours.

The converter comes from the llama-cpp-python sdist of the installed version
(`make model` runs scripts/fetch_llama_cpp_convert.py); env
PROSPARSE_LLAMA_CPP_CONVERT names the script, and without it these tests skip.
Tiny transformers models with a SentencePiece tokenizer (llama.cpp's
converter reads tokenizer.model for all four families). Gemma 3's query scale
is 1/sqrt(head_dim) here: llama.cpp derives the scale from the model size
and ignores query_pre_attn_scalar.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prosparse_cpu import Model
from prosparse_cpu.convert.cli import convert
from support.hf_models import make_family_folder
from test_families import FAMILIES, REL_TOL, engine_runs, hf_logits, rel_err, tokens

pytestmark = pytest.mark.llamacpp


@pytest.fixture(scope="module")
def llama_cpp_convert() -> str:
    p = os.environ.get("PROSPARSE_LLAMA_CPP_CONVERT")
    if not p:
        pytest.skip("PROSPARSE_LLAMA_CPP_CONVERT is not set (`make model` fetches llama.cpp's "
                    "convert_hf_to_gguf.py from the llama-cpp-python sdist and the Makefile sets it)")
    if not Path(p).is_file():
        pytest.skip(f"PROSPARSE_LLAMA_CPP_CONVERT={p} does not exist (run `make model`)")
    return p


def llama_cpp_file(script: str, folder: Path, out: Path) -> Path:
    r = subprocess.run([sys.executable, script, str(folder), "--outfile", str(out), "--outtype", "f32"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def llama_cpp_scores(llama_cpp, path, ids) -> np.ndarray:
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=2, n_threads_batch=2, logits_all=True,
                          verbose=False, seed=0)
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float64)


def greedy(next_logits, prompt, n=12) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(next_logits(ids))))
    return ids[len(prompt):]


@pytest.fixture(scope="module", params=FAMILIES)
def family_files(request, tmp_path_factory, tokenizers_dir, llama_cpp_convert):
    fam = request.param
    d = tmp_path_factory.mktemp(fam)
    over = {"query_pre_attn_scalar": 32} if fam == "gemma3" else {}
    model, n = make_family_folder(d / "hf", tokenizers_dir, fam, tok="spm", **over)
    theirs = llama_cpp_file(llama_cpp_convert, d / "hf", d / "llama_cpp.gguf")
    ours = d / "ours.gguf"
    convert(d / "hf", ours, "f32", progress=False)
    return fam, model, n, theirs, ours


def test_engine_on_llama_cpp_files(family_files):
    fam, model, n, theirs, _ = family_files
    ids = tokens(n, 200 if fam == "gemma3" else 60, seed=4)
    ref = hf_logits(model, ids)
    errs = [rel_err(x, ref) for x in engine_runs(theirs, ids)]
    print(f"{fam} (llama.cpp's converter): rel errs {errs}")
    assert max(errs) <= REL_TOL


def test_llama_cpp_agrees_on_tokens(family_files, llama_cpp):
    """llama.cpp on its file and on ours: the same top-1 as our engine wherever the HF
    model's top-2 margin is clear of llama.cpp's rounding (~1e-3 of the largest logit
    here), and the same greedy continuation."""
    fam, model, n, theirs, ours = family_files
    ids = tokens(n, 120, seed=5)
    ref = hf_logits(model, ids)
    with Model(str(theirs), threads=2, n_ctx=512, cache_type="f32") as m:
        mine = m.eval_all(ids)
    top2 = np.sort(ref, 1)[:, -2:]
    clear = (top2[:, 1] - top2[:, 0]) > 1e-2 * np.abs(ref).max()
    for path in (theirs, ours):
        theirs_scores = llama_cpp_scores(llama_cpp, path, ids)
        agree = theirs_scores.argmax(1) == mine.argmax(1)
        print(f"{fam} llama.cpp on {path.name}: rel err vs HF {rel_err(theirs_scores, ref):.2e}, "
              f"top-1 agreement {agree.mean():.3f} ({agree[clear].mean():.3f} on {clear.sum()} clear)")
        assert agree[clear].all() and clear.sum() > len(ids) // 2
    prompt = ids[:8]
    llm = llama_cpp.Llama(model_path=str(theirs), n_ctx=128, n_threads=2, n_threads_batch=2, verbose=False, seed=0)
    theirs_greedy = []
    for tok in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
        theirs_greedy.append(int(tok))
        if len(theirs_greedy) == 12:
            break
    with Model(str(theirs), threads=2, n_ctx=128, cache_type="f32") as m:
        def nxt(seq):
            m.reset()
            m.eval(seq)
            return m.logits()
        mine_greedy = greedy(nxt, prompt)
    hf_greedy = greedy(lambda seq: hf_logits(model, seq)[-1], prompt)
    print(f"{fam} greedy: ours {mine_greedy}, llama.cpp {theirs_greedy}, HF {hf_greedy}")
    assert mine_greedy == hf_greedy
    assert theirs_greedy == mine_greedy


def test_llama_cpp_files_convert_to_prosparse(family_files, tmp_path):
    """A llama.cpp file of the layout as prosparse-convert's source: the prosparse file
    (base_architecture, the layout's tensors) computes the same function, and cut-offs
    calibrated on it give threshold mode its target sparsity."""
    from prosparse_cpu.convert.reference import GGUFModel
    from support.vocab import SAMPLE_TEXTS, corpus_text

    fam, model, n, theirs, _ = family_files
    text = tmp_path / "calib.txt"
    text.write_text(corpus_text()[:6000])
    out = tmp_path / "ps.gguf"
    assert convert(theirs, out, "auto", calibrate=text, target_sparsity=0.5, calibrate_tokens=256,
                   progress=False)["arch"] == "prosparse"
    assert GGUFModel(out).kv("prosparse.base_architecture") == {"llama3": "llama"}.get(fam, fam)
    ids = tokens(n, 60, seed=6)
    with Model(str(theirs), threads=2, n_ctx=256, cache_type="f32") as m:
        want = m.eval_all(ids)
    with Model(str(out), threads=2, n_ctx=256, cache_type="f32") as m:
        assert rel_err(m.eval_all(ids), want) <= 1e-5
        m.reset()
        m.set_mode("threshold")
        m.eval(m.tokenize(" ".join(SAMPLE_TEXTS)))
        sparsity = m.stats()["sparsity"]
    print(f"{fam}: threshold sparsity {sparsity:.3f} at a 0.5 target")
    assert abs(sparsity - 0.5) < 0.15
