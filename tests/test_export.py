"""Export: the physically pruned model reproduces the masked model (eval mode)."""
import pytest
import torch

from raysearch.remote_code.pruned_structure import ClassificationHead
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


def _masked_and_exported(backbone, tokenizer, sparsity: float, remove_block: bool):
    """(shape, gates, the masked model's logits on TEXTS, the exported model, its structure, the batch)."""
    torch.manual_seed(0)
    shape = EncoderShape.from_hf_config(backbone.config)
    gates = _gates_for(shape, sparsity, remove_block)
    branch = Branch(GatedEncoder(backbone, gates), ClassificationHead(shape.hidden_size, 3), "classification").eval()
    batch = _batch(tokenizer)
    z = gates.deterministic()
    with torch.no_grad():
        masked = branch(batch, z)
        exported, structure = export_classifier(branch, z)
    return shape, z, masked, exported, structure, batch


@pytest.mark.parametrize("sparsity,remove_block", [(0.0, False), (0.3, False), (0.6, True), (0.9, True)])
def test_exported_equals_masked(tiny_backbone, tokenizer, tmp_path, sparsity, remove_block):
    shape, z, masked, exported, structure, batch = _masked_and_exported(tiny_backbone, tokenizer, sparsity, remove_block)
    with torch.no_grad():
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


LOAD_WITHOUT_RAYSEARCH = """
import json, sys
try:
    import raysearch  # noqa: F401
    sys.exit("raysearch is importable")
except ImportError:
    pass
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, pipeline

path, texts = sys.argv[1], json.loads(sys.argv[2])
config = AutoConfig.from_pretrained(path, trust_remote_code=True)
model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
batch = AutoTokenizer.from_pretrained(path, trust_remote_code=True)(*texts, padding=True, return_tensors="pt")
with torch.no_grad():
    logits = model(**batch).logits
labels = [r["label"] for r in pipeline("text-classification", model=path, trust_remote_code=True)(
    [{"text": a, "text_pair": b} for a, b in zip(*texts)])]
print(json.dumps({"model_type": config.model_type, "logits": logits.tolist(), "labels": labels}))
"""


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_an_exported_folder_loads_with_only_torch_and_transformers(tokenizer, tmp_path, architecture):
    """Heads, FFN units, whole blocks and hidden dimensions pruned; loaded by the Auto classes and `pipeline` in a
    process that cannot import raysearch (no site hooks: the editable install's finder is not there)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from raysearch.config import ModelConfig
    from raysearch.models import load_backbone

    from .conftest import tiny_model_config

    torch.manual_seed(0)
    backbone = load_backbone(ModelConfig(**tiny_model_config(architecture)), tokenizer).eval()
    shape, _, masked, exported, structure, _ = _masked_and_exported(backbone, tokenizer, 0.6, True)
    assert len(structure["hidden"]) < shape.hidden_size and structure["layers"][1]["intermediate"] == []
    save_exported(exported, structure, tmp_path / "model", tokenizer)
    site_packages = str(Path(torch.__file__).parents[1])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": site_packages, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-S", "-c", LOAD_WITHOUT_RAYSEARCH, str(tmp_path / "model"), json.dumps(TEXTS)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    logits = torch.tensor(loaded["logits"])
    assert loaded["model_type"] == "raysearch-pruned"
    assert torch.allclose(logits, masked, atol=1e-5), (logits - masked).abs().max()
    assert loaded["labels"] == [str(i) for i in masked.argmax(-1).tolist()]
