"""Predictor and activation-statistics folders for a make_hf_model model
(n_embd 64, n_ff 128, 2 layers): PowerInfer's layout (model_L.pt with
fc1/fc2, activation_L.pt counts) and prosparse-train's safetensors."""
from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

RANK, N_FF, N_EMBD, N_LAYER = 16, 128, 64, 2


def powerinfer_dirs(tmp_path, threshold=0.25):
    g = torch.Generator().manual_seed(7)
    pred, stats = tmp_path / "pred", tmp_path / "stats"
    pred.mkdir()
    stats.mkdir()
    for L in range(N_LAYER):
        torch.save({"fc1.weight": torch.randn(RANK, N_EMBD, generator=g),
                    "fc2.weight": torch.randn(N_FF, RANK, generator=g)}, pred / f"model_{L}.pt")
        torch.save(torch.randint(0, 1000, (N_FF,), generator=g), stats / f"activation_{L}.pt")
    (pred / "config.json").write_text(json.dumps({"sparse_threshold": threshold}))
    return pred, stats


def trainer_dirs(tmp_path, n_tokens=5000):
    g = torch.Generator().manual_seed(8)
    pred, stats = tmp_path / "tpred", tmp_path / "tstats"
    pred.mkdir()
    stats.mkdir()
    save_file({f"layers.{L}.fc{i}.weight": torch.randn(*shape, generator=g)
               for L in range(N_LAYER) for i, shape in ((1, (RANK, N_EMBD)), (2, (N_FF, RANK)))},
              str(pred / "predictors.safetensors"),
              metadata={"threshold": "0.1", "input": "ffn_norm", "hidden_act": "none"})
    save_file({f"layers.{L}.counts": torch.randint(0, n_tokens, (N_FF,), generator=g).float()
               for L in range(N_LAYER)}, str(stats / "activation_stats.safetensors"),
              metadata={"n_tokens": str(n_tokens)})
    return pred, stats
