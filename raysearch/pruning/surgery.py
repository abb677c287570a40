"""Model surgery: turn a gated encoder into a physically smaller one.

(1) `fold_gates` multiplies the deterministic gate values into the weights they scale, then
(2) `apply_structure` slices away every unit whose gate is 0 (the kept indices: `kept_units`).
Loading an exported model re-applies (2) to a freshly built encoder of the saved shape
(`raysearch.exported` owns that format).
"""
import torch
from torch import nn
from transformers import AutoModel
from transformers.pytorch_utils import prune_linear_layer

from .gates import consistent_structure
from .masked_encoder import encoder_layers


class RemovedAttention(nn.Module):
    """An attention block with no surviving head: the sublayer reduces to its LayerNorm."""

    def __init__(self, layer_norm: nn.LayerNorm):
        super().__init__()
        self.LayerNorm = layer_norm

    def forward(self, hidden_states, *args, **kwargs):
        return self.LayerNorm(hidden_states), None


class RemovedIntermediate(nn.Module):
    def forward(self, hidden_states):
        return hidden_states[..., :0]


class RemovedOutput(nn.Module):
    """An FFN block with no surviving unit: LayerNorm of the residual input."""

    def __init__(self, layer_norm: nn.LayerNorm):
        super().__init__()
        self.LayerNorm = layer_norm

    def forward(self, hidden_states, input_tensor):
        return self.LayerNorm(input_tensor)


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


def slice_linear(linear: nn.Linear, rows=None, cols=None) -> nn.Linear:
    """Keep output units `rows` and input features `cols` (transformers' prune_linear_layer, once per dim)."""
    if rows is not None:
        linear = prune_linear_layer(linear, rows, dim=0)
    if cols is not None:
        linear = prune_linear_layer(linear, cols, dim=1)
    return linear


def _slice_layer_norm(ln: nn.LayerNorm, keep) -> nn.LayerNorm:
    new = nn.LayerNorm(len(keep), eps=ln.eps)
    new.weight.data.copy_(ln.weight.data[keep])
    new.bias.data.copy_(ln.bias.data[keep])
    return new


def _slice_embedding(emb: nn.Embedding, keep) -> nn.Embedding:
    new = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx)
    new.weight.data.copy_(emb.weight.data[:, keep])
    return new


def apply_structure(backbone: nn.Module, kept: dict, head_dim: int):
    """Slice `backbone` in place down to the units in `kept` (from `kept_units`); a head reading its hidden
    states must drop the same input features (`slice_linear(..., cols=kept["hidden"])`)."""
    keep = torch.tensor(kept["hidden"], dtype=torch.long)
    emb = backbone.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        setattr(emb, name, _slice_embedding(getattr(emb, name), keep))
    emb.LayerNorm = _slice_layer_norm(emb.LayerNorm, keep)
    for layer, layer_kept in zip(encoder_layers(backbone), kept["layers"]):
        heads = layer_kept["heads"]
        if heads:
            rows = torch.tensor([h * head_dim + j for h in heads for j in range(head_dim)], dtype=torch.long)
            attention = layer.attention.self
            for name in ("query", "key", "value"):
                setattr(attention, name, slice_linear(getattr(attention, name), rows=rows, cols=keep))
            attention.num_attention_heads = len(heads)
            attention.all_head_size = len(heads) * head_dim
            out = layer.attention.output
            out.dense = slice_linear(out.dense, rows=keep, cols=rows)
            out.LayerNorm = _slice_layer_norm(out.LayerNorm, keep)
        else:
            layer.attention = RemovedAttention(_slice_layer_norm(layer.attention.output.LayerNorm, keep))
        units = torch.tensor(layer_kept["intermediate"], dtype=torch.long)
        if len(units):
            layer.intermediate.dense = slice_linear(layer.intermediate.dense, rows=units, cols=keep)
            layer.output.dense = slice_linear(layer.output.dense, rows=keep, cols=units)
            layer.output.LayerNorm = _slice_layer_norm(layer.output.LayerNorm, keep)
        else:
            layer.output = RemovedOutput(_slice_layer_norm(layer.output.LayerNorm, keep))
            layer.intermediate = RemovedIntermediate()


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
