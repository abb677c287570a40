"""Apply gates inside a Hugging Face BERT-family encoder's forward pass.

No model source is copied: forward hooks on the existing submodules multiply
  * the attention context per head           (pre-hook on attention.output.dense),
  * the attention block output by its layer gate and the hidden gate (hook on the same dense),
  * the FFN activations per unit             (hook on intermediate),
  * the FFN block output by its layer gate and the hidden gate (hook on output.dense),
and every LayerNorm is swapped for a GatedLayerNorm that normalises over the surviving
hidden dimensions only (CoFi), so the masked model equals the physically pruned one.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .gates import GateSet


def encoder_layers(backbone: nn.Module):
    return backbone.encoder.layer


class GatedLayerNorm(nn.Module):
    """LayerNorm over the hidden dims that are still alive, then scaled by the hidden gate.

    Keeps the original module's parameters (same tensors, same names), so state dicts and
    parameter groups are unchanged.
    """

    def __init__(self, layer_norm: nn.LayerNorm, encoder: "GatedEncoder"):
        super().__init__()
        self.weight, self.bias, self.eps = layer_norm.weight, layer_norm.bias, layer_norm.eps
        self.normalized_shape = layer_norm.normalized_shape
        self._encoder = [encoder]  # a list so that the encoder is not registered as a submodule

    def forward(self, x):
        gating = self._encoder[0].gating
        if gating is None:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        alive, hidden = gating["hidden_alive"], gating["hidden"]
        if alive is None:  # every hidden dim alive: the plain kernel
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps) * hidden
        # statistics over the alive dims only, by masked sums (cheaper than gathering and scattering them)
        count = gating["hidden_count"]
        mean = (x * alive).sum(-1, keepdim=True) / count
        centered = (x - mean) * alive
        variance = (centered * centered).sum(-1, keepdim=True) / count
        return (centered * torch.rsqrt(variance + self.eps) * self.weight + self.bias) * hidden


class GatedEncoder(nn.Module):
    """A BERT/RoBERTa encoder whose structures are gated by a GateSet.

    forward(z=None) runs the dense model; forward(z=gates) runs it with those gate values.
    """

    def __init__(self, backbone: nn.Module, gates: GateSet):
        super().__init__()
        self.backbone = backbone
        self.gates = gates
        self.gating = None  # per-forward scales, built from z; None = ungated
        self._install()

    def _install(self):
        self.backbone.embeddings.LayerNorm = GatedLayerNorm(self.backbone.embeddings.LayerNorm, self)
        for i, layer in enumerate(encoder_layers(self.backbone)):
            attn_out, ffn_out = layer.attention.output, layer.output
            attn_out.LayerNorm = GatedLayerNorm(attn_out.LayerNorm, self)
            ffn_out.LayerNorm = GatedLayerNorm(ffn_out.LayerNorm, self)
            attn_out.dense.register_forward_pre_hook(self._scale_input("head_scale", i))
            attn_out.dense.register_forward_hook(self._scale_output("attention_scale", i))
            layer.intermediate.register_forward_hook(self._scale_output("intermediate", i))
            ffn_out.dense.register_forward_hook(self._scale_output("ffn_scale", i))

    def _scale_input(self, key, index):
        def hook(module, args):
            if self.gating is not None:
                return (args[0] * self.gating[key][index],) + tuple(args[1:])
        return hook

    def _scale_output(self, key, index):
        def hook(module, args, output):
            if self.gating is not None:
                return output * self.gating[key][index]
        return hook

    def _build_gating(self, z):
        hidden = z["hidden"]
        alive = hidden != 0
        all_alive = bool(alive.all())
        dh = self.gates.shape.head_dim
        return {
            "hidden": hidden,
            "hidden_alive": None if all_alive else alive.to(hidden.dtype),
            "hidden_count": None if all_alive else alive.sum(),
            "head_scale": z["head"].repeat_interleave(dh, dim=-1),
            "attention_scale": z["mha"].unsqueeze(-1) * hidden,
            "intermediate": z["intermediate"],
            "ffn_scale": z["ffn"].unsqueeze(-1) * hidden,
        }

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, z=None, all_layers: bool = False):
        """The last hidden state; with all_layers, the embeddings' output and every layer's (a tuple of L+1)."""
        self.gating = None if z is None else self._build_gating(z)
        try:
            # the last GatedLayerNorm has already applied the hidden gate to the output
            out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                output_hidden_states=all_layers)
            return out.hidden_states if all_layers else out.last_hidden_state
        finally:
            self.gating = None
