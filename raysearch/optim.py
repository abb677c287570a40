"""The optimizer every parameter set trains with: AdamW, on torch's fused kernel where it has one.

torch's default AdamW on a CPU loops over the tensors in Python, one small kernel per tensor and operation; the
fused kernel updates each tensor in one pass. On the demo's tiny model (about 60 weight tensors) the optimizer
was a third of a training step (bench/step_time.py measures the step with each). The update rule is the same;
the results differ only in float rounding.
"""
import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch 2.x has fused AdamW kernels


def adamw(params, **options) -> torch.optim.AdamW:
    params = list(params)
    devices = {p.device.type for p in params}
    fused = bool(params) and devices <= set(FUSED_DEVICES) and len(devices) == 1
    return torch.optim.AdamW(params, fused=fused or None, **options)
