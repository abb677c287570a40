"""Parameter accounting for a gated BERT-family encoder.

"Prunable" parameters are the encoder layers' attention projections (Q, K, V, O) and FFN
dense layers, weights and biases. Embeddings, layer norms and heads are not counted (they
shrink with the hidden dimension, but CoFi and most papers report encoder sparsity).

One formula serves both figures: fed keep-probabilities it is the expected remaining count
(independent gates), fed 0/1 indicators it is the exact count of a concrete structure.
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EncoderShape:
    layers: int
    heads: int
    head_dim: int
    hidden_size: int  # D, the hidden dimensions (gate kind `hidden` selects among them)
    ffn_units: int  # F, units per FFN block (gate kind `intermediate`; kind `ffn` gates a whole block)

    @classmethod
    def from_hf_config(cls, config) -> "EncoderShape":
        return cls(
            layers=config.num_hidden_layers,
            heads=config.num_attention_heads,
            head_dim=config.hidden_size // config.num_attention_heads,
            hidden_size=config.hidden_size,
            ffn_units=config.intermediate_size,
        )

    @property
    def full_prunable_params(self) -> int:
        d, f, a = self.hidden_size, self.ffn_units, self.heads * self.head_dim
        per_layer = (3 * d * a + 3 * a) + (a * d + d) + (2 * d * f + f + d)
        return self.layers * per_layer


def remaining_params(shape: EncoderShape, head, mha, intermediate, ffn, hidden) -> torch.Tensor:
    """Remaining prunable parameters given per-unit keep values.

    head [L,H], mha [L], intermediate [L,F], ffn [L], hidden [D]: probabilities (expected
    count) or 0/1 indicators (exact count). A layer's output bias (D) survives while any of
    its units does, hence the 1 - prod(1 - p) terms.
    """
    d_kept = hidden.sum()
    dh = shape.head_dim
    heads_kept = (mha.unsqueeze(-1) * head).sum(-1)  # [L]
    any_head = mha * (1 - torch.prod(1 - head, dim=-1))
    units_kept = (ffn.unsqueeze(-1) * intermediate).sum(-1)
    any_unit = ffn * (1 - torch.prod(1 - intermediate, dim=-1))
    attention = heads_kept * (4 * dh * d_kept + 3 * dh) + any_head * d_kept
    feed_forward = units_kept * (2 * d_kept + 1) + any_unit * d_kept
    return (attention + feed_forward).sum()


def sparsity(shape: EncoderShape, remaining) -> torch.Tensor | float:
    return 1.0 - remaining / shape.full_prunable_params
