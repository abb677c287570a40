"""Task metrics from integer predictions and labels (scikit-learn's implementations for F1 and MCC)."""
import numpy as np


def accuracy(pred, gold) -> float:
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def f1(pred, gold) -> float:
    """Binary F1 of class 1; macro F1 over the classes present when there are more than two."""
    from sklearn.metrics import f1_score  # imported here: it costs every trial's worker about a second

    binary = set(np.unique(gold)) | set(np.unique(pred)) <= {0, 1}
    return float(f1_score(gold, pred, average="binary" if binary else "macro", zero_division=0))


def mcc(pred, gold) -> float:
    """Matthews correlation (multiclass: Gorodkin's R_K); 0 where it is undefined."""
    from sklearn.metrics import matthews_corrcoef

    return float(matthews_corrcoef(gold, pred))


METRIC_FUNCTIONS = {"accuracy": accuracy, "f1": f1, "mcc": mcc}


def compute(metric: str, pred, gold) -> float:
    return METRIC_FUNCTIONS[metric](pred, gold)
