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

texts, out = json.loads(sys.argv[1]), {}
for path, remote in json.loads(sys.argv[2]):  # remote: whether trust_remote_code is given
    config = AutoConfig.from_pretrained(path, trust_remote_code=remote)
    model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=remote).eval()
    batch = AutoTokenizer.from_pretrained(path, trust_remote_code=remote)(*texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    labels = [r["label"] for r in pipeline("text-classification", model=path, trust_remote_code=remote)(
        [{"text": a, "text_pair": b} for a, b in zip(*texts)])]
    out[path] = {"model_type": config.model_type, "class": type(model).__name__, "logits": logits.tolist(), "labels": labels}
print(json.dumps(out))
"""


def _stock_expressible(backbone, tokenizer):
    """Masked logits and the export of a structure a stock class describes: CLS pooling, every head and hidden
    dimension kept, the same number of FFN units in every layer."""
    shape = EncoderShape.from_hf_config(backbone.config)
    gates = GateSet(shape)
    with torch.no_grad():
        for kind, p in gates.log_alpha.items():
            p.fill_(10.0)
        scores = torch.randn(gates.log_alpha["intermediate"].shape, generator=torch.Generator().manual_seed(1))
        keep = scores.argsort(dim=-1, descending=True)[:, : shape.ffn_units // 2]
        gates.log_alpha["intermediate"].fill_(-10.0).scatter_(1, keep, 10.0)
    branch = Branch(GatedEncoder(backbone, gates), ClassificationHead(shape.hidden_size, 3, pooling="cls"), "classification").eval()
    z = gates.deterministic()
    with torch.no_grad():
        masked = branch(_batch(tokenizer), z)
        exported, structure = export_classifier(branch, z)
    return masked, exported, structure


@pytest.mark.parametrize("architecture", ["bert", "roberta"])
def test_an_exported_folder_loads_with_only_torch_and_transformers(tokenizer, tmp_path, architecture):
    """Heads, FFN units, whole blocks and hidden dimensions pruned: loaded by the Auto classes and `pipeline` with the
    folder's own code; and a structure a stock class describes: loaded as that class with no remote code. Both in a
    process that cannot import raysearch (no site hooks: the editable install's finder is not there)."""
    import copy
    import json
    import subprocess
    import sys
    from pathlib import Path

    from raysearch.config import ModelConfig
    from raysearch.models import load_backbone

    from .conftest import tiny_model_config

    torch.manual_seed(0)
    backbone = load_backbone(ModelConfig(**tiny_model_config(architecture)), tokenizer).eval()
    stock_masked, stock, stock_structure = _stock_expressible(copy.deepcopy(backbone), tokenizer)
    shape, _, masked, exported, structure, _ = _masked_and_exported(backbone, tokenizer, 0.6, True)
    assert len(structure["hidden"]) < shape.hidden_size and structure["layers"][1]["intermediate"] == []
    pruned_dir, stock_dir = tmp_path / "model", tmp_path / "stock"
    assert save_exported(exported, structure, pruned_dir, tokenizer)["stock_class"] is None
    assert save_exported(stock, stock_structure, stock_dir, tokenizer)["stock_class"] == f"{'Bert' if architecture == 'bert' else 'Roberta'}ForSequenceClassification"
    assert not list(stock_dir.glob("*.py"))
    with torch.no_grad():  # raysearch's own loader maps the stock weight names back
        again = load_exported(stock_dir)(*(_batch(tokenizer)[k] for k in ("input_ids", "attention_mask", "token_type_ids")))
    assert torch.allclose(again, stock_masked, atol=1e-5)
    site_packages = str(Path(torch.__file__).parents[1])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": site_packages, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    folders = [[str(pruned_dir), True], [str(stock_dir), False]]
    done = subprocess.run([sys.executable, "-S", "-c", LOAD_WITHOUT_RAYSEARCH, json.dumps(TEXTS), json.dumps(folders)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.splitlines()[-1])
    for path, reference, model_type in ((pruned_dir, masked, "raysearch-pruned"), (stock_dir, stock_masked, architecture)):
        found = loaded[str(path)]
        logits = torch.tensor(found["logits"])
        assert found["model_type"] == model_type
        assert torch.allclose(logits, reference, atol=1e-5), (logits - reference).abs().max()
        assert found["labels"] == [str(i) for i in reference.argmax(-1).tolist()]
    assert loaded[str(stock_dir)]["class"] == f"{'Bert' if architecture == 'bert' else 'Roberta'}ForSequenceClassification"
