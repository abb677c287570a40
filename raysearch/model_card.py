"""The model card (`README.md`) of an exported folder: what the model was pruned from and for, how good and how big it
is, how fast on a CPU (median and spread: one figure on a busy machine says little), and the lines that load it.

Written when a run exports its model (no latency: measuring it would cost every trial) and again, with the latency, by
`raysearch export`. The facts come from the run's config and final metrics as a plain dict (`card_facts`).
"""
import statistics
from pathlib import Path

CARD_FILE = "README.md"


def card_facts(config, final: dict) -> dict:
    """The card's facts from a run's TrainConfig and final metrics (with the export's sizes)."""
    transfer = config.transfer
    how = transfer.preset or (f"{transfer.coupling} coupling of {', '.join(transfer.groups)}" if transfer.coupled else "no transfer")
    return {
        "base_model": f"tiny {config.model.tiny.get('architecture', 'bert')} (random, for tests)" if config.model.tiny else config.model.name_or_path,
        "target_task": config.target.source, "transfer_task": transfer.task.source if transfer.task and transfer.coupled else None,
        "transfer": how, "target_sparsity": config.pruning.target_sparsity, "exact_sparsity": final.get("exact_sparsity"),
        "parameters": final.get("export_parameters"), "encoder_prunable_parameters": final.get("export_prunable_parameters"),
        "target_dev": final.get("target_dev"), "target_test": final.get("target_test"), "metric": config.target.metric,
        "stock_class": final.get("export_stock_class"),
    }


def latency_summary(samples_ms: list[float], batch: int, seq: int) -> dict:
    """Median and spread (quartiles, min, max) of per-pass CPU times."""
    q = statistics.quantiles(samples_ms, n=4) if len(samples_ms) > 1 else [samples_ms[0]] * 3
    return {"batch": batch, "seq": seq, "passes": len(samples_ms), "median_ms": statistics.median(samples_ms),
            "p25_ms": q[0], "p75_ms": q[2], "min_ms": min(samples_ms), "max_ms": max(samples_ms)}


def _number(value, fmt: str) -> str:
    return "–" if value is None or value != value else format(value, fmt)


def card_text(facts: dict, latency: dict | None = None) -> str:
    stock = facts.get("stock_class")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification", "---", "",
             f"# A pruned {facts['base_model']}", "",
             "Structurally pruned with raysearch (task-aware pruning with transfer). " + (
                 f"Its structure is one the stock `{stock}` describes (the same FFN width in every layer, no head or hidden "
                 "dimension pruned), so it loads with only `torch` and `transformers`, with no remote code." if stock else
                 "The folder carries the code that builds the pruned architecture (`modeling_raysearch_pruned.py`, named by "
                 "`auto_map` in `config.json`), so it loads with only `torch` and `transformers` installed, with "
                 "`trust_remote_code=True`."), "",
             "| | |", "| --- | --- |",
             f"| pruned from | {facts['base_model']} |",
             f"| loads as | {stock or 'raysearch-pruned (its code in this folder)'} |",
             f"| target task | {facts['target_task']} |",
             f"| transfer | {facts['transfer']}" + (f" from {facts['transfer_task']}" if facts.get("transfer_task") else "") + " |",
             f"| sparsity (encoder's prunable weights) | {_number(facts.get('exact_sparsity'), '.3f')} (target {_number(facts.get('target_sparsity'), 'g')}) |",
             f"| parameters | {_number(facts.get('parameters'), ',')} (encoder layers: {_number(facts.get('encoder_prunable_parameters'), ',')}) |",
             f"| dev {facts.get('metric', 'accuracy')} | {_number(facts.get('target_dev'), '.4f')} |",
             f"| test {facts.get('metric', 'accuracy')} | {_number(facts.get('target_test'), '.4f')} |"]
    if latency:
        lines.append(f"| CPU latency, batch {latency['batch']} x {latency['seq']} tokens | median {latency['median_ms']:.2f} ms "
                     f"(quartiles {latency['p25_ms']:.2f}-{latency['p75_ms']:.2f}, min {latency['min_ms']:.2f}, max {latency['max_ms']:.2f}; "
                     f"{latency['passes']} passes) |")
    else:
        lines.append("| CPU latency | not measured at training time: `raysearch export` measures it |")
    remote = "" if stock else ", trust_remote_code=True"
    lines += ["", "## Load it", "", "```python",
              "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline",
              "", 'path = "PATH/TO/THIS/FOLDER"',
              f"model = AutoModelForSequenceClassification.from_pretrained(path{remote})",
              f"tokenizer = AutoTokenizer.from_pretrained(path{remote})",
              f'classify = pipeline("text-classification", model=path{remote})', "```", ""]
    if not stock:
        lines += ["With raysearch installed, `import raysearch.hf` first and `trust_remote_code` is not needed.", ""]
    return "\n".join(lines)


def write_model_card(out_dir: str | Path, facts: dict, latency: dict | None = None) -> Path:
    path = Path(out_dir) / CARD_FILE
    path.write_text(card_text(facts, latency))
    return path
