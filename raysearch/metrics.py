"""Task metrics from integer predictions and labels."""
import math

import numpy as np


def accuracy(pred, gold) -> float:
    pred, gold = np.asarray(pred), np.asarray(gold)
    return float((pred == gold).mean())


def f1(pred, gold) -> float:
    """Binary F1 of class 1; macro F1 over classes when there are more than two."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    classes = [1] if set(np.unique(gold)) | set(np.unique(pred)) <= {0, 1} else sorted(set(gold) | set(pred))
    scores = []
    for c in classes:
        tp = np.sum((pred == c) & (gold == c))
        fp, fn = np.sum((pred == c) & (gold != c)), np.sum((pred != c) & (gold == c))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def matthews_corrcoef(pred, gold) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K); 0 when undefined."""
    pred, gold = np.asarray(pred), np.asarray(gold)
    k = int(max(pred.max(initial=0), gold.max(initial=0))) + 1
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (gold, pred), 1)
    t, p, c, s = confusion.sum(1), confusion.sum(0), np.trace(confusion), confusion.sum()
    denominator = math.sqrt((s * s - p @ p) * (s * s - t @ t))
    return 0.0 if denominator == 0 else float((c * s - t @ p) / denominator)


METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corrcoef}


def compute(metric: str, pred, gold) -> float:
    return METRIC_FUNCTIONS[metric](pred, gold)
