"""Latency of exported pruned models vs the dense model, beside the remaining-parameter ratio; PyTorch and ONNX
Runtime side by side.

MiniLM-L6 (packaged), CPU, batch 32, sequence 128, inference mode. For each sparsity a structure is made
by keeping the top-scoring heads and FFN units (random scores, one global keep fraction found by bisection
so that the exact encoder sparsity hits the target), exported, and timed against the dense export; then the
same model as ONNX (`raysearch export --onnx`, checked against PyTorch) under ONNX Runtime on the same inputs.

    python bench/export_latency.py [--repeats 10] [--batch 32] [--seq 128]
"""
import argparse
import statistics
import tempfile
import time

import torch

from raysearch.config import ModelConfig
from raysearch.remote_code.pruned_structure import ClassificationHead
from raysearch.models import load_backbone, load_tokenizer
from raysearch.pruning import EncoderShape, GatedEncoder, GateSet, exact_remaining
from raysearch.exported import ONNX_FILE, export_classifier, export_onnx
from raysearch.pruning.surgery import count_prunable_params
from raysearch.transfer.joint import Branch


def structure_at(shape: EncoderShape, sparsity: float, seed: int = 0) -> dict:
    """Gate values keeping the top fraction q of heads and FFN units, q chosen for the target sparsity."""
    generator = torch.Generator().manual_seed(seed)
    head_scores = torch.rand(shape.layers, shape.heads, generator=generator)
    unit_scores = torch.rand(shape.layers, shape.ffn_units, generator=generator)

    def gates(q):
        return {"mha": torch.ones(shape.layers), "ffn": torch.ones(shape.layers), "hidden": torch.ones(shape.hidden_size),
                "head": (head_scores >= torch.quantile(head_scores, 1 - q)).float() if q > 0 else torch.zeros_like(head_scores),
                "intermediate": (unit_scores >= torch.quantile(unit_scores, 1 - q)).float() if q > 0 else torch.zeros_like(unit_scores)}

    low, high = 0.0, 1.0
    for _ in range(40):
        q = (low + high) / 2
        achieved = 1 - exact_remaining(shape, gates(q)) / shape.full_prunable_params
        low, high = (low, q) if achieved < sparsity else (q, high)
    return gates((low + high) / 2)


def latency(model, batch, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(2):
            model(**batch)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def onnx_latency(model, batch, repeats: int) -> tuple[float, float]:
    """(median seconds under ONNX Runtime on the CPU, largest logit difference from PyTorch) of an exported model."""
    import onnxruntime

    with tempfile.TemporaryDirectory() as folder:
        check = export_onnx(model, folder)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # the same CPUs as PyTorch gets
        session = onnxruntime.InferenceSession(f"{folder}/{ONNX_FILE}", options, providers=["CPUExecutionProvider"])
        feeds = {k: v.numpy() for k, v in batch.items()}
        for _ in range(2):
            session.run(None, feeds)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - started)
    return statistics.median(times), check["onnx_max_logit_diff"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    args = parser.parse_args()

    torch.manual_seed(0)
    model_config = ModelConfig()
    tokenizer = load_tokenizer(model_config)
    backbone = load_backbone(model_config, tokenizer).eval()
    shape = EncoderShape.from_hf_config(backbone.config)
    branch = Branch(GatedEncoder(backbone, GateSet(shape)), ClassificationHead(shape.hidden_size, 2), "classification").eval()
    ids = torch.randint(1000, 20000, (args.batch, args.seq))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}

    full = {k: torch.ones_like(v) for k, v in structure_at(shape, 0.0).items()}
    dense, _ = export_classifier(branch, full)
    dense_time = latency(dense, batch, args.repeats)
    dense_onnx, diff = onnx_latency(dense, batch, args.repeats)
    print(f"MiniLM-L6, CPU ({torch.get_num_threads()} threads), batch {args.batch}, seq {args.seq}, median of {args.repeats}")
    print("| sparsity (exact) | params ratio | latency (ms) | latency ratio | latency ratio / params ratio | ONNX Runtime (ms) | ONNX ratio | ONNX max logit diff |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| 0.00 (dense) | 1.000 | {dense_time * 1e3:.1f} | 1.000 | 1.00 | {dense_onnx * 1e3:.1f} | 1.000 | {diff:.1e} |")
    for sparsity in args.sparsities:
        z = structure_at(shape, sparsity)
        pruned, _ = export_classifier(branch, z)
        ratio = count_prunable_params(pruned.backbone) / shape.full_prunable_params
        t = latency(pruned, batch, args.repeats)
        t_onnx, diff = onnx_latency(pruned, batch, args.repeats)
        print(f"| {1 - ratio:.2f} | {ratio:.3f} | {t * 1e3:.1f} | {t / dense_time:.3f} | {t / dense_time / ratio:.2f} | "
              f"{t_onnx * 1e3:.1f} | {t_onnx / dense_onnx:.3f} | {diff:.1e} |")
    print("target: latency ratio within 1.25x of the parameter ratio (last column <= 1.25)")


if __name__ == "__main__":
    main()
