"""The optimizer every parameter set trains with: AdamW, on torch's fused kernel where it has one (the same update
rule, one pass per tensor instead of a Python loop of small kernels; docs/PERFORMANCE.md, "Measurements behind the
code")."""
import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch 2.x has fused AdamW kernels


def adamw(params, **options) -> torch.optim.AdamW:
    params = list(params)
    devices = {p.device.type for p in params}
    fused = bool(params) and devices <= set(FUSED_DEVICES) and len(devices) == 1
    return torch.optim.AdamW(params, fused=fused or None, **options)
