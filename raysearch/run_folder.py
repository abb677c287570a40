"""The folder of one `raysearch train` run: what it holds and how to tell one.

    raysearch_run.json   the marker, written first: the folder is raysearch's from then on
    config.yaml          the validated config the run started with
    metrics.jsonl        one line per evaluation (raysearch.reporting.LocalReporter)
    checkpoints/         step_NNNNNN/checkpoint.pt
    model/               the exported pruned model (raysearch.exported), with its card README.md
    final_metrics.json   the final evaluation and the export check
"""
import json
from pathlib import Path

RUN_MARKER = "raysearch_run.json"
CONFIG_FILE = "config.yaml"
MODEL_DIR = "model"
FINAL_METRICS = "final_metrics.json"
RUN_OUTPUTS = ("metrics.jsonl", "checkpoints", MODEL_DIR, FINAL_METRICS)  # what runs from before the marker hold


def is_run_folder(path: Path) -> bool:
    """A folder raysearch made for a run (the marker; runs from before it have their outputs)."""
    path = Path(path)
    return (path / RUN_MARKER).is_file() or any((path / name).exists() for name in RUN_OUTPUTS)


def run_config(path: Path):
    """The TrainConfig the run started with."""
    import yaml

    from .config import config_from_dict

    return config_from_dict(yaml.safe_load((Path(path) / CONFIG_FILE).read_text()))


def final_metrics(path: Path) -> dict:
    file = Path(path) / FINAL_METRICS
    return json.loads(file.read_text()) if file.is_file() else {}
