"""A pruned encoder's structure: slicing an encoder down to its kept units, and the classification head on top.
Shipped inside every exported model folder: torch and transformers only."""
import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer


class ClassificationHead(nn.Module):
    """Pool the tokens (mean over the attention mask, or the first token), then dense + tanh + dropout + linear.

    Mean pooling is the default: sentence encoders such as all-MiniLM-L6-v2 are trained with it, so a
    fresh head learns from useful features at once; `cls` is the classic BERT choice.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1, pooling: str = "mean"):
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)
        for layer in (self.dense, self.out):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, hidden_states, attention_mask=None):
        if self.pooling == "mean" and attention_mask is not None:
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = hidden_states[:, 0]
        return self.out(self.dropout(torch.tanh(self.dense(pooled))))


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


def slice_linear(linear: nn.Linear, rows=None, cols=None) -> nn.Linear:
    """Keep output units `rows` and input features `cols` (transformers' prune_linear_layer, once per dim)."""
    if rows is not None:
        linear = prune_linear_layer(linear, rows, dim=0)
    if cols is not None:
        linear = prune_linear_layer(linear, cols, dim=1)
    return linear


def slice_layer_norm(ln: nn.LayerNorm, keep) -> nn.LayerNorm:
    new = nn.LayerNorm(len(keep), eps=ln.eps)
    new.weight.data.copy_(ln.weight.data[keep])
    new.bias.data.copy_(ln.bias.data[keep])
    return new


def slice_embedding(emb: nn.Embedding, keep) -> nn.Embedding:
    new = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx)
    new.weight.data.copy_(emb.weight.data[:, keep])
    return new


def apply_structure(backbone: nn.Module, kept: dict, head_dim: int):
    """Slice `backbone` in place down to the units in `kept` (from `kept_units`); a head reading its hidden
    states must drop the same input features (`slice_linear(..., cols=kept["hidden"])`)."""
    keep = torch.tensor(kept["hidden"], dtype=torch.long)
    emb = backbone.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        setattr(emb, name, slice_embedding(getattr(emb, name), keep))
    emb.LayerNorm = slice_layer_norm(emb.LayerNorm, keep)
    for layer, layer_kept in zip(backbone.encoder.layer, kept["layers"]):
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
            out.LayerNorm = slice_layer_norm(out.LayerNorm, keep)
        else:
            layer.attention = RemovedAttention(slice_layer_norm(layer.attention.output.LayerNorm, keep))
        units = torch.tensor(layer_kept["intermediate"], dtype=torch.long)
        if len(units):
            layer.intermediate.dense = slice_linear(layer.intermediate.dense, rows=units, cols=keep)
            layer.output.dense = slice_linear(layer.output.dense, rows=keep, cols=units)
            layer.output.LayerNorm = slice_layer_norm(layer.output.LayerNorm, keep)
        else:
            layer.output = RemovedOutput(slice_layer_norm(layer.output.LayerNorm, keep))
            layer.intermediate = RemovedIntermediate()
