"""Model surgery: turn a gated encoder into a physically smaller one, save it and load it back.

Export = (1) fold the deterministic gate values into the weights they multiply, then
(2) slice away every unit whose gate is 0. Loading re-applies (2) to a freshly built
model of the saved shape and loads the safetensors weights. The structure (kept indices)
is stored as JSON beside the weights.
"""
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from ..models import ClassificationHead
from .gates import consistent_structure
from .masked_encoder import encoder_layers

WEIGHTS_FILE = "model.safetensors"
META_FILE = "raysearch_export.json"


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


class PrunedClassifier(nn.Module):
    """An exported target model: the shrunk encoder and its classification head."""

    def __init__(self, backbone: nn.Module, head: ClassificationHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(hidden.last_hidden_state, attention_mask)


# ------------------------------------------------------------------ structure


def structure_from_gates(z: dict[str, torch.Tensor]) -> dict:
    """Kept indices per structure; an empty list means the whole block is removed."""
    z = consistent_structure(z)
    kept = lambda t: (t > 0).nonzero().flatten().tolist()  # noqa: E731
    return {
        "hidden": kept(z["hidden"]),
        "layers": [{"heads": kept(z["head"][i]), "intermediate": kept(z["intermediate"][i])} for i in range(len(z["mha"]))],
    }


def _slice_linear(linear: nn.Linear, rows=None, cols=None) -> nn.Linear:
    weight = linear.weight.data
    if rows is not None:
        weight = weight[rows]
    if cols is not None:
        weight = weight[:, cols]
    new = nn.Linear(weight.shape[1], weight.shape[0], bias=linear.bias is not None)
    new.weight.data.copy_(weight)
    if linear.bias is not None:
        new.bias.data.copy_(linear.bias.data if rows is None else linear.bias.data[rows])
    return new


def _slice_layer_norm(ln: nn.LayerNorm, keep) -> nn.LayerNorm:
    new = nn.LayerNorm(len(keep), eps=ln.eps)
    new.weight.data.copy_(ln.weight.data[keep])
    new.bias.data.copy_(ln.bias.data[keep])
    return new


def _slice_embedding(emb: nn.Embedding, keep) -> nn.Embedding:
    new = nn.Embedding(emb.num_embeddings, len(keep), padding_idx=emb.padding_idx)
    new.weight.data.copy_(emb.weight.data[:, keep])
    return new


def apply_structure(backbone: nn.Module, head: ClassificationHead, structure: dict, head_dim: int):
    """Slice `backbone` and `head` in place down to the kept units of `structure`."""
    keep = torch.tensor(structure["hidden"], dtype=torch.long)
    emb = backbone.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        setattr(emb, name, _slice_embedding(getattr(emb, name), keep))
    emb.LayerNorm = _slice_layer_norm(emb.LayerNorm, keep)
    for layer, kept in zip(encoder_layers(backbone), structure["layers"]):
        heads = kept["heads"]
        if heads:
            rows = torch.tensor([h * head_dim + j for h in heads for j in range(head_dim)], dtype=torch.long)
            attention = layer.attention.self
            for name in ("query", "key", "value"):
                setattr(attention, name, _slice_linear(getattr(attention, name), rows=rows, cols=keep))
            attention.num_attention_heads = len(heads)
            attention.all_head_size = len(heads) * head_dim
            out = layer.attention.output
            out.dense = _slice_linear(out.dense, rows=keep, cols=rows)
            out.LayerNorm = _slice_layer_norm(out.LayerNorm, keep)
        else:
            layer.attention = RemovedAttention(_slice_layer_norm(layer.attention.output.LayerNorm, keep))
        units = torch.tensor(kept["intermediate"], dtype=torch.long)
        if len(units):
            layer.intermediate.dense = _slice_linear(layer.intermediate.dense, rows=units, cols=keep)
            layer.output.dense = _slice_linear(layer.output.dense, rows=keep, cols=units)
            layer.output.LayerNorm = _slice_layer_norm(layer.output.LayerNorm, keep)
        else:
            layer.output = RemovedOutput(_slice_layer_norm(layer.output.LayerNorm, keep))
            layer.intermediate = RemovedIntermediate()
    head.dense = _slice_linear(head.dense, cols=keep)


# ------------------------------------------------------------------ folding


@torch.no_grad()
def _fold_gates(backbone: nn.Module, z: dict[str, torch.Tensor], head_dim: int):
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


def _plain_copy(gated_backbone: nn.Module) -> nn.Module:
    """A hook-free copy of a gated backbone (GatedLayerNorm keeps LayerNorm's parameter names)."""
    backbone = AutoModel.from_config(gated_backbone.config, add_pooling_layer=False)
    backbone.load_state_dict(gated_backbone.state_dict())
    return backbone.to(next(gated_backbone.parameters()).device)


def export_classifier(branch, z: dict[str, torch.Tensor]) -> tuple[PrunedClassifier, dict]:
    """The target branch with gates `z` (deterministic) as a physically pruned model."""
    z = {k: v.detach().float().cpu() for k, v in consistent_structure(z).items()}
    gated = branch.encoder.backbone
    head_dim = branch.encoder.gates.shape.head_dim
    backbone = _plain_copy(gated).cpu().float()
    head = ClassificationHead(branch.head.dense.in_features, branch.head.out.out_features, pooling=branch.head.pooling)
    head.load_state_dict(branch.head.state_dict())
    head = head.cpu().float()
    _fold_gates(backbone, z, head_dim)
    structure = structure_from_gates(z)
    apply_structure(backbone, head, structure, head_dim)
    return PrunedClassifier(backbone, head).eval(), structure


def count_prunable_params(backbone: nn.Module) -> int:
    """Brute-force count of the Linear parameters left in the encoder layers."""
    return sum(p.numel() for layer in encoder_layers(backbone) for m in layer.modules()
               if isinstance(m, nn.Linear) for p in m.parameters())


# ------------------------------------------------------------------ save / load


def save_exported(model: PrunedClassifier, structure: dict, out_dir: str | Path, tokenizer=None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, out / WEIGHTS_FILE)
    backbone_config = model.backbone.config
    meta = {
        "format": "raysearch-pruned-classifier/1",
        "model_type": backbone_config.model_type,
        "hf_config": backbone_config.to_dict(),
        "structure": structure,
        "num_labels": model.head.out.out_features,
        "head_hidden": model.head.out.in_features,
        "pooling": model.head.pooling,
        "parameters": sum(p.numel() for p in model.parameters()),
        "prunable_parameters": count_prunable_params(model.backbone),
    }
    (out / META_FILE).write_text(json.dumps(meta))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    meta["size_on_disk_bytes"] = (out / WEIGHTS_FILE).stat().st_size
    return meta


def load_exported(path: str | Path) -> PrunedClassifier:
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    hf_config = dict(meta["hf_config"])
    config = AutoConfig.for_model(hf_config.pop("model_type", meta["model_type"]), **hf_config)
    backbone = AutoModel.from_config(config, add_pooling_layer=False)
    head = ClassificationHead(config.hidden_size, meta["num_labels"], pooling=meta.get("pooling", "cls"))
    head.out = nn.Linear(meta["head_hidden"], meta["num_labels"])
    head_dim = config.hidden_size // config.num_attention_heads
    apply_structure(backbone, head, meta["structure"], head_dim)
    model = PrunedClassifier(backbone, head)
    model.load_state_dict(load_file(path / WEIGHTS_FILE), strict=True)
    return model.eval()
