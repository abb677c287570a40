"""The exported artefact: a physically pruned target model, its format on disk, and loading it back.

A folder holds `model.safetensors` (the sliced weights), `config.json` (a Hugging Face config of model type
`raysearch-pruned`: transformers' Auto classes load the folder once `raysearch.hf` is imported, or without raysearch
from the folder's own copy of raysearch.remote_code, which its `auto_map` names: `trust_remote_code=True`),
`raysearch_export.json` (the encoder's config, the kept units, the head and the sizes) and the tokenizer. Loading
builds a fresh encoder of the saved config, re-applies the slicing (`pruning.surgery`) and loads the weights.
"""
import json
import shutil
import statistics
import time
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel

from . import remote_code
from .pruning.gates import consistent_structure
from .pruning.surgery import count_prunable_params, fold_gates, kept_units, plain_copy
from .remote_code.pruned_structure import ClassificationHead, apply_structure, slice_linear
from .stock_export import from_stock, stock_class, stock_config, to_stock

WEIGHTS_FILE = "model.safetensors"
REMOTE_CODE_FILES = ("configuration_raysearch_pruned.py", "modeling_raysearch_pruned.py", "pruned_structure.py")
AUTO_MAP = {"AutoConfig": "configuration_raysearch_pruned.RaysearchPrunedConfig",
            "AutoModelForSequenceClassification": "modeling_raysearch_pruned.RaysearchPrunedForSequenceClassification"}
META_FILE = "raysearch_export.json"
FORMAT = "raysearch-pruned-classifier/1"


class PrunedClassifier(nn.Module):
    """An exported target model: the shrunk encoder and its classification head."""

    def __init__(self, backbone: nn.Module, head: ClassificationHead):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return self.head(hidden.last_hidden_state, attention_mask)


def export_classifier(branch, z: dict[str, torch.Tensor]) -> tuple[PrunedClassifier, dict]:
    """The target branch (a gated encoder and its classification head) with deterministic gates `z` as a
    physically pruned model; returns it with its kept units."""
    z = {k: v.detach().float().cpu() for k, v in consistent_structure(z).items()}
    head_dim = branch.encoder.gates.shape.head_dim
    backbone = plain_copy(branch.encoder.backbone).cpu().float()
    head = ClassificationHead(branch.head.dense.in_features, branch.head.out.out_features, pooling=branch.head.pooling)
    head.load_state_dict(branch.head.state_dict())
    head = head.cpu().float()
    fold_gates(backbone, z, head_dim)
    kept = kept_units(z)
    apply_structure(backbone, kept, head_dim)
    head.dense = slice_linear(head.dense, cols=torch.tensor(kept["hidden"], dtype=torch.long))
    return PrunedClassifier(backbone, head).eval(), kept


def save_exported(model: PrunedClassifier, kept: dict, out_dir: str | Path, tokenizer=None) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    backbone_config = model.backbone.config
    stock = stock_class(backbone_config.model_type, kept, model.head.pooling, backbone_config.hidden_size,
                        backbone_config.num_attention_heads)
    if stock:  # a stock class describes it: no remote code at all
        save_file(to_stock(state, backbone_config.model_type), out / WEIGHTS_FILE, metadata={"format": "pt"})
        stock_config(backbone_config, kept, model.head.out.out_features, stock).save_pretrained(out)
    else:
        save_file(state, out / WEIGHTS_FILE, metadata={"format": "pt"})
        hf_config(model, kept).save_pretrained(out)  # config.json: what transformers' Auto classes read
        for name in REMOTE_CODE_FILES:  # the code config.json's auto_map names, for a machine without raysearch
            shutil.copyfile(Path(remote_code.__file__).parent / name, out / name)
    meta = {
        "stock_class": stock,
        "format": FORMAT,
        "model_type": backbone_config.model_type,
        "hf_config": backbone_config.to_dict(),
        "structure": kept,
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


def hf_config(model: PrunedClassifier, kept: dict):
    """The exported model's Hugging Face config (raysearch.hf); its labels are the task's (0..n-1)."""
    from .hf import RaysearchPrunedConfig

    num_labels = model.head.out.out_features
    return RaysearchPrunedConfig(auto_map=AUTO_MAP, encoder=model.backbone.config.to_dict(), structure=kept, head_hidden=model.head.out.in_features,
                                 pooling=model.head.pooling, num_labels=num_labels,
                                 id2label={i: str(i) for i in range(num_labels)}, label2id={str(i): i for i in range(num_labels)})


def load_exported(path: str | Path) -> PrunedClassifier:
    path = Path(path)
    meta = json.loads((path / META_FILE).read_text())
    hf_config = dict(meta["hf_config"])
    config = AutoConfig.for_model(hf_config.pop("model_type", meta["model_type"]), **hf_config)
    backbone = AutoModel.from_config(config, add_pooling_layer=False)
    head = ClassificationHead(config.hidden_size, meta["num_labels"], pooling=meta.get("pooling", "cls"))
    head.out = nn.Linear(meta["head_hidden"], meta["num_labels"])
    head_dim = config.hidden_size // config.num_attention_heads
    kept = meta["structure"]
    apply_structure(backbone, kept, head_dim)
    head.dense = slice_linear(head.dense, cols=torch.tensor(kept["hidden"], dtype=torch.long))
    model = PrunedClassifier(backbone, head)
    weights = load_file(path / WEIGHTS_FILE)
    model.load_state_dict(from_stock(weights, config.model_type) if meta.get("stock_class") else weights, strict=True)
    return model.eval()


def measure_latency(model: PrunedClassifier, batch_size: int = 1, seq_len: int = 128, warmup: int = 2, repeats: int = 10,
                    device: str | torch.device = "cpu") -> float:
    """Median forward time in milliseconds of a batch of random token ids (after `warmup` passes), on `device`."""
    return statistics.median(latency_samples(model, batch_size, seq_len, warmup, repeats, device))


def latency_samples(model: PrunedClassifier, batch_size: int = 1, seq_len: int = 128, warmup: int = 2, repeats: int = 10,
                    device: str | torch.device = "cpu") -> list[float]:
    """Each timed forward pass in milliseconds (`repeats` of them, after `warmup`)."""
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.backbone.config.vocab_size, (batch_size, seq_len), generator=generator).to(device)
    mask, types = torch.ones_like(ids), torch.zeros_like(ids)
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            model(ids, mask, types)
            if torch.device(device).type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - started) * 1000)
    return times


ONNX_FILE = "model.onnx"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def export_onnx(model: PrunedClassifier, out_dir: str | Path, seq_len: int = 16) -> dict:
    """`model.onnx` beside the weights (batch and sequence length dynamic), checked against PyTorch on inputs of
    another shape than the traced ones; returns the largest logit difference and both CPU latencies (batch 1,
    `seq_len`). Needs the `onnx` extra (onnx, onnxruntime)."""
    try:
        import numpy as np
        import onnxruntime
    except ImportError:
        from .errors import UserInputError

        raise UserInputError("--onnx", "needs onnx and onnxruntime", "pip install 'raysearch[onnx]'") from None
    path = Path(out_dir) / ONNX_FILE
    model = model.cpu().eval()
    vocab = model.backbone.config.vocab_size
    traced = torch.randint(0, vocab, (2, seq_len), generator=torch.Generator().manual_seed(0))
    axes = {name: {0: "batch", 1: "sequence"} for name in ONNX_INPUTS}
    # the TorchScript exporter: the dynamo one needs onnxscript, and this graph (fixed per export) needs nothing more
    with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python branches, which this graph does not take
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (traced, torch.ones_like(traced), torch.zeros_like(traced)), str(path), input_names=list(ONNX_INPUTS),
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = torch.randint(0, vocab, (3, seq_len + 5), generator=torch.Generator().manual_seed(1))
    feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones(ids.shape, np.int64), "token_type_ids": np.zeros(ids.shape, np.int64)}
    with torch.inference_mode():
        reference = model(ids, torch.ones_like(ids), torch.zeros_like(ids)).numpy()
    max_diff = float(np.abs(session.run(None, feeds)[0] - reference).max())
    one = {k: v[:1, :seq_len] for k, v in feeds.items()}
    times = []
    for i in range(23):
        started = time.perf_counter()
        session.run(None, one)
        if i >= 3:
            times.append((time.perf_counter() - started) * 1000)
    return {"onnx_max_logit_diff": max_diff, "onnx_cpu_latency_ms": statistics.median(times),
            "torch_cpu_latency_ms": measure_latency(model, 1, seq_len, warmup=3, repeats=20)}
