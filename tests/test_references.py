"""The references themselves are checked: support/torch_reference.torch_logits
(used for every activation) equals transformers where transformers can run it."""
from __future__ import annotations

import pytest
import torch

from support.compare import rel_err
from support.hf_models import make_hf_model
from support.torch_reference import torch_logits


@pytest.mark.parametrize("family,act", [("llama", "silu"), ("llama", "relu"), ("mistral", "relu2")])
def test_torch_reference_matches_transformers(tmp_path, family, act):
    cfg = make_hf_model(tmp_path, family, act, n_vocab=96, shard=None)
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float64)
    ids = [3, 17, 5, 90, 41, 8, 8, 60]
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    assert rel_err(torch_logits(tmp_path, ids), want) < 2e-6   # transformers builds RoPE tables in float32
    assert cfg["hidden_act"] == act
