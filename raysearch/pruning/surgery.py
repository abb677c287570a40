"""Model surgery: turn a gated encoder into a physically smaller one.

(1) `fold_gates` multiplies the deterministic gate values into the weights they scale, then
(2) `apply_structure` (raysearch.remote_code.pruned_structure, shipped with every export) slices away every unit
whose gate is 0 (the kept indices: `kept_units`).
Loading an exported model re-applies (2) to a freshly built encoder of the saved shape
(`raysearch.exported` owns that format).
"""
import torch
from torch import nn
from transformers import AutoModel

from .gates import consistent_structure
from .masked_encoder import encoder_layers


# ------------------------------------------------------------------ structure


def kept_units(z: dict[str, torch.Tensor]) -> dict:
    """Kept indices per structure kind (hidden dims; per layer heads and FFN units); an empty list means the
    whole block is removed."""
    z = consistent_structure(z)
    kept = lambda t: (t > 0).nonzero().flatten().tolist()  # noqa: E731
    return {
        "hidden": kept(z["hidden"]),
        "layers": [{"heads": kept(z["head"][i]), "intermediate": kept(z["intermediate"][i])} for i in range(len(z["mha"]))],
    }


# ------------------------------------------------------------------ folding


@torch.no_grad()
def fold_gates(backbone: nn.Module, z: dict[str, torch.Tensor], head_dim: int):
    """Multiply gate values into the weights, so that slicing alone reproduces the masked model."""
    hidden = z["hidden"]

    def scale_layer_norm(ln):  # the hidden gate multiplies every LayerNorm output
        ln.weight.mul_(hidden)
        ln.bias.mul_(hidden)

    scale_layer_norm(backbone.embeddings.LayerNorm)
    for i, layer in enumerate(encoder_layers(backbone)):
        attn_out = layer.attention.output.dense
        attn_out.weight.mul_(z["head"][i].repeat_interleave(head_dim).unsqueeze(0))
        row_scale = z["mha"][i] * hidden
        attn_out.weight.mul_(row_scale.unsqueeze(1))
        attn_out.bias.mul_(row_scale)
        ffn_out = layer.output.dense
        ffn_out.weight.mul_(z["intermediate"][i].unsqueeze(0))
        row_scale = z["ffn"][i] * hidden
        ffn_out.weight.mul_(row_scale.unsqueeze(1))
        ffn_out.bias.mul_(row_scale)
        scale_layer_norm(layer.attention.output.LayerNorm)
        scale_layer_norm(layer.output.LayerNorm)


def plain_copy(gated_backbone: nn.Module) -> nn.Module:
    """A hook-free copy of a gated backbone (GatedLayerNorm keeps LayerNorm's parameter names)."""
    backbone = AutoModel.from_config(gated_backbone.config, add_pooling_layer=False)
    backbone.load_state_dict(gated_backbone.state_dict())
    return backbone.to(next(gated_backbone.parameters()).device)


def count_prunable_params(backbone: nn.Module) -> int:
    """Brute-force count of the Linear parameters left in the encoder layers."""
    return sum(p.numel() for layer in encoder_layers(backbone) for m in layer.modules()
               if isinstance(m, nn.Linear) for p in m.parameters())
