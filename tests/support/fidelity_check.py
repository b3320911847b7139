"""The teacher-forced fidelity check of a real model file (scripts/fidelity.py),
shared by the SmolLM2 and Gemma 3 tests."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


def fidelity():
    """scripts/fidelity.py as a module (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location("fidelity", ROOT / "scripts" / "fidelity.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def check_teacher_forced(model: str) -> None:
    """Teacher-forced top-1 over 2,048 positions of ordinary prose: against
    llama.cpp, and as faithful to the float64 reference of the file's weights
    as llama.cpp is."""
    pytest.importorskip("llama_cpp")
    F = fidelity()
    text = F.default_text_path()
    if text is None:
        pytest.skip("no ordinary text file on this machine")
    res = F.measure(model, text, 2048, threads=2)
    print({k: v for k, v in res.items() if isinstance(v, (int, float))})
    assert res["positions"] >= 2000
    assert res["ours_vs_llama"] >= 0.95
    # as faithful to the exact computation as llama.cpp: top-1 within noise
    # (a few near-tied positions), logits as close to the exact ones
    assert res["ours_vs_exact"] >= res["llama_vs_exact"] - 0.015
    assert res["logit_rms_ours_vs_exact"] <= 1.2 * res["logit_rms_llama_vs_exact"]
    # disagreements are near-ties: where the exact top-2 gap is clear, we agree
    assert res["clear_positions"] >= 1000
    assert res["ours_vs_exact_clear"] >= 0.995
