"""Export: the physically pruned model reproduces the masked model (eval mode)."""
import pytest
import torch

from raysearch.heads import ClassificationHead
from raysearch.pruning import EncoderShape, GateSet, exact_remaining
from raysearch.exported import export_classifier, load_exported, save_exported
from raysearch.pruning.surgery import count_prunable_params
from raysearch.pruning.masked_encoder import GatedEncoder
from raysearch.transfer.joint import Branch

TEXTS = (["A man is playing a guitar on stage.", "The cat sat.", "Prices rose sharply in the third quarter of the year."],
         ["Someone plays music.", "A dog barked loudly at the mailman.", "Costs went up."])


def _batch(tokenizer):
    enc = tokenizer(*TEXTS, padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "token_type_ids": enc.get("token_type_ids"), "labels": torch.zeros(3, dtype=torch.long)}


def _gates_for(shape, sparsity: float, remove_block: bool, seed: int = 0) -> GateSet:
    """Log-alphas that keep roughly (1 - sparsity) of every structure, optionally removing blocks."""
    gates = GateSet(shape)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for kind, p in gates.log_alpha.items():
            scores = torch.randn(p.shape, generator=generator)
            threshold = torch.quantile(scores.flatten(), sparsity if kind != "hidden" else sparsity / 2)
            p.copy_(torch.where(scores > threshold, 3.0 + scores, -3.0 + scores))
        if remove_block:
            gates.log_alpha["mha"][0] = -10.0  # whole attention block of layer 0
            gates.log_alpha["ffn"][1] = -10.0  # whole FFN block of layer 1
            gates.log_alpha["head"][2] = -10.0  # every head of layer 2: its block goes too
    return gates


@pytest.mark.parametrize("sparsity,remove_block", [(0.0, False), (0.3, False), (0.6, True), (0.9, True)])
def test_exported_equals_masked(tiny_backbone, tokenizer, tmp_path, sparsity, remove_block):
    torch.manual_seed(0)
    shape = EncoderShape.from_hf_config(tiny_backbone.config)
    gates = _gates_for(shape, sparsity, remove_block)
    branch = Branch(GatedEncoder(tiny_backbone, gates), ClassificationHead(shape.hidden_size, 3), "classification").eval()
    batch = _batch(tokenizer)
    z = gates.deterministic()
    with torch.no_grad():
        masked = branch(batch, z)
        exported, structure = export_classifier(branch, z)
        pruned = exported(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert torch.allclose(masked, pruned, atol=1e-4), (masked - pruned).abs().max()
    if remove_block:
        assert structure["layers"][0]["heads"] == [] and structure["layers"][1]["intermediate"] == []
        assert structure["layers"][2]["heads"] == []
    assert count_prunable_params(exported.backbone) == exact_remaining(shape, z)
    if sparsity >= 0.3:
        assert count_prunable_params(exported.backbone) < shape.full_prunable_params

    meta = save_exported(exported, structure, tmp_path / "model", tokenizer)
    assert (tmp_path / "model" / "model.safetensors").stat().st_size == meta["size_on_disk_bytes"] > 0
    assert meta["parameters"] == sum(p.numel() for p in exported.parameters())
    reloaded = load_exported(tmp_path / "model")
    with torch.no_grad():
        again = reloaded(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert torch.allclose(again, pruned, atol=1e-6)

    # ONNX: a graph with dynamic batch and sequence that gives PyTorch's logits (on inputs of another shape)
    from raysearch.exported import export_onnx

    onnx = export_onnx(reloaded, tmp_path / "model")
    assert (tmp_path / "model" / "model.onnx").stat().st_size > 0 and onnx["onnx_max_logit_diff"] < 1e-4
    assert onnx["onnx_cpu_latency_ms"] > 0 and onnx["torch_cpu_latency_ms"] > 0

    # the Hugging Face way: Auto classes once raysearch.hf is imported, no trust_remote_code; save_pretrained round-trips
    import raysearch.hf  # noqa: F401
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    auto = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    assert AutoTokenizer.from_pretrained(tmp_path / "model")(*TEXTS, padding=True)["input_ids"] == _batch(tokenizer)["input_ids"].tolist()
    assert auto.config.num_labels == 3 and auto.config.id2label == {0: "0", 1: "1", 2: "2"}  # the task's labels
    with torch.no_grad():
        logits = auto(**{k: v for k, v in batch.items() if k != "labels"}).logits
    assert torch.allclose(logits, masked, atol=1e-4)
    auto.save_pretrained(tmp_path / "again")
    with torch.no_grad():
        back = AutoModelForSequenceClassification.from_pretrained(tmp_path / "again").eval()(**{k: v for k, v in batch.items() if k != "labels"})
    assert torch.allclose(back.logits, logits, atol=1e-6)


def test_hidden_dimension_pruning_shrinks_every_matrix(tiny_backbone):
    shape = EncoderShape.from_hf_config(tiny_backbone.config)
    gates = _gates_for(shape, 0.5, False)
    branch = Branch(GatedEncoder(tiny_backbone, gates), ClassificationHead(shape.hidden_size, 2), "classification")
    exported, structure = export_classifier(branch, gates.deterministic())
    kept = len(structure["hidden"])
    assert 0 < kept < shape.hidden_size
    assert exported.backbone.embeddings.word_embeddings.weight.shape[1] == kept
    assert exported.head.dense.in_features == kept
