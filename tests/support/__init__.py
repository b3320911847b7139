"""What the tests build their inputs from; nothing is downloaded.

    vocab            byte-level vocabularies, tiny tokenizers, ChatML, sample text
    gguf_files       tiny GGUF files: hand-made tensors, or a Hugging Face model exported
    hf_models        tiny random Hugging Face models (in memory, or saved as folders)
    torch_reference  PyTorch forward passes of those models, the converter's oracle
    trainer_runs     a corpus and a config for a tiny prosparse-train run
    compare          the engine's logits of a file, random inputs, error measures

The float64 numpy forward of a GGUF file is the package's own
(prosparse_cpu.convert.reference), so scripts and the converter use the same one.
Here: where the real SmolLM2 and Gemma 3 files live.
"""
from __future__ import annotations

import os
from pathlib import Path


def smollm2_path() -> Path:
    """The real SmolLM2-135M-Instruct Q4_1 file (`make model`): env PROSPARSE_SMOLLM2, else the cache path."""
    env = os.environ.get("PROSPARSE_SMOLLM2")
    return Path(env) if env else Path.home() / ".cache" / "prosparse-cpu" / "SmolLM2-135M-Instruct.Q4_1.gguf"


SMOLLM2 = smollm2_path()



def gemma3_path() -> Path:
    """The real gemma-3-270m Q4_K_M file (`make model`): env PROSPARSE_GEMMA3, else the cache path."""
    env = os.environ.get("PROSPARSE_GEMMA3")
    return Path(env) if env else Path.home() / ".cache" / "prosparse-cpu" / "gemma-3-270m-q4_k_m.gguf"


GEMMA3 = gemma3_path()
