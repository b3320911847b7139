"""Lambda and learning rate as pure functions of the optimizer step (1-based).

lambda_at() is PAPER.md's progressive schedule, stage by stage:
  stage 0  (t <= T_0):            lambda = 0 (activation substitution only)
  stage 1  (T_0 < t <= T_1):      lambda = lambda_1, constant (warm-up)
  stage i>=2 (T_{i-1} < t <= T_i): eta = (sin(-pi/2 + pi*(t - T_{i-1})/(T_i - T_{i-1})) + 1) / 2
                                   lambda = lambda_{i-1} + eta * (lambda_i - lambda_{i-1})
  after the last stage:           lambda = lambda_last
A stage whose lambda equals the previous one is therefore constant.
"""
from __future__ import annotations

import math


def lambda_at(step: int, stages) -> float:
    """stages: [[lambda_i, T_i], ...] as validated by config.validate_stages."""
    if step <= stages[0][1]:
        return float(stages[0][0])
    for i in range(1, len(stages)):
        lam, end = stages[i]
        if step <= end:
            if i == 1:
                return float(lam)
            prev_lam, prev_end = stages[i - 1]
            eta = 0.5 * (math.sin(-math.pi / 2 + math.pi * (step - prev_end) / (end - prev_end)) + 1.0)
            return float(prev_lam + eta * (lam - prev_lam))
    return float(stages[-1][0])


def lr_at(step: int, peak: float, min_lr: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine down to `min_lr` at `total`."""
    if warmup > 0 and step <= warmup:
        return peak * step / warmup
    if total <= warmup:
        return peak
    progress = min(1.0, (step - warmup) / (total - warmup))
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (peak - min_lr)


def stage_table(stages) -> list[dict]:
    """One row per stage: index, kind, step range and lambda range (for docs and tests)."""
    rows, prev_end, prev_lam = [], 0, 0.0
    for i, (lam, end) in enumerate(stages):
        if i == 0:
            kind = "substitution (lambda 0)"
        elif i == 1:
            kind = "warm-up (constant)"
        elif lam == prev_lam:
            kind = "constant"
        else:
            kind = "half-sine"
        start = prev_end + 1 if i > 0 else 1
        rows.append({"stage": i, "kind": kind, "first_step": start, "last_step": int(end),
                     "lambda_from": lam if i <= 1 else prev_lam, "lambda_to": lam})
        prev_end, prev_lam = int(end), lam
    return rows
