"""`raysearch train` end to end on a tiny model: outputs, export check, resume."""
import json

import pytest
import yaml

from raysearch.cli import main
from raysearch.exported import load_exported
from raysearch.run_folder import read_metrics

from .conftest import tiny_model_config


def _config(tmp_path, pair_task, max_steps):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "model": tiny_model_config("roberta"),
        "target": {"source": str(pair_task)},
        "transfer": {"task": {"source": str(pair_task), "kind": "mlm"}, "coupling": "tied", "groups": ["embeddings", "masks"],
                     "transfer_start_step": 2},
        "pruning": {"target_sparsity": 0.4, "warmup_steps": 4, "finetune_steps": 2},
        "max_steps": max_steps, "batch_size": 8, "eval_every": 3, "learning_rate": 1e-3,
    }))
    return path


def test_train_writes_metrics_checkpoints_and_exported_model(tmp_path, pair_task, capsys):
    out = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, pair_task, 6)), "--output-dir", str(out), "--quiet"]) == 0
    metrics = read_metrics(out)
    assert [m["step"] for m in metrics] == [3, 6]
    for key in ("target_dev", "transfer_dev", "expected_sparsity", "exact_sparsity", "remaining_params", "wall_time"):
        assert key in metrics[-1]
    final = json.loads((out / "final_metrics.json").read_text())
    assert final["export_dev_agreement"] == 1.0 and final["export_max_logit_diff"] < 1e-4
    assert final["export_prunable_parameters"] == final["remaining_params"]
    assert not (out / "checkpoints").exists()  # finished: model and results kept, checkpoints gone
    assert load_exported(out / "model").head.out.out_features == 2
    card = (out / "model" / "README.md").read_text()  # the model card: what, from what, how good, how to load
    for line in ("| pruned from | tiny roberta (random, for tests) |", f"| target task | {pair_task} |",
                 f"| transfer | tied coupling of embeddings, masks from {pair_task} |", f"| dev accuracy | {final['target_dev']:.4f} |",
                 f"| parameters | {final['export_parameters']:,} (encoder layers: {final['export_prunable_parameters']:,}) |",
                 "from_pretrained(path, trust_remote_code=True)"):
        assert line in card
    captured = capsys.readouterr()
    assert '"exact_sparsity"' in captured.out
    # a run that ends away from its target sparsity says so, with the figures (this 6-step run is short for it)
    assert final["sparsity_off_target"] == pytest.approx(final["exact_sparsity"] - 0.4)
    assert ("warning: the run ended at exact sparsity" in captured.err) == (abs(final["sparsity_off_target"]) > 0.01)


def test_a_run_off_its_target_sparsity_warns_with_the_figures(pair_task, tmp_path):
    from raysearch.config import config_from_dict
    from raysearch.loop import warn_if_off_target

    config = config_from_dict(yaml.safe_load(_config(tmp_path, pair_task, 80).read_text()))
    lines = []
    off = {"exact_sparsity": 0.781, "expected_sparsity": 0.62, "sparsity_off_target": 0.381}
    assert warn_if_off_target(off, config, lines.append) == lines[0]
    assert "exact sparsity 0.781 for a target of 0.400 (expected 0.620)" in lines[0] and "now 4 of 80 steps" in lines[0]
    assert warn_if_off_target({**off, "sparsity_off_target": 0.009}, config, lines.append) is None and len(lines) == 1


def test_a_run_resumes_from_its_folder_alone_and_its_config_finds_data_beside_it(tmp_path, pair_task, monkeypatch, capsys):
    """The config names its data relative to its own folder and is run from another directory; the run keeps its
    checkpoints when asked, and the user extends it by its folder alone (its config.yaml), more steps, --resume.
    Without --keep-checkpoints a finished run keeps its model and results only."""
    config = yaml.safe_load(_config(tmp_path, pair_task, 6).read_text())
    config["target"]["source"] = config["transfer"]["task"]["source"] = pair_task.name  # beside the config file
    (pair_task.parent / "relative.yaml").write_text(yaml.safe_dump(config))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "run"
    assert main(["train", str(pair_task.parent / "relative.yaml"), "--output-dir", str(out), "--quiet", "--keep-checkpoints"]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["target"]["source"] == str(pair_task.resolve())
    assert main(["train", "--resume", "--output-dir", str(out), "--quiet", "--set", "max_steps=9"]) == 0
    assert [m["step"] for m in read_metrics(out)] == [3, 6, 9]
    assert not (out / "checkpoints").exists() and (out / "model" / "README.md").is_file()  # this time not kept
    capsys.readouterr()
    assert main(["train", "--resume", "--output-dir", str(out), "--quiet", "--set", "max_steps=12"]) == 2
    assert "finished and its checkpoints were removed" in capsys.readouterr().err


def test_latency_is_measured_at_every_evaluation_when_asked(tmp_path, pair_task):
    out = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, pair_task, 6)), "--output-dir", str(out), "--quiet",
                 "--set", "latency.enabled=true", "--set", "latency.repeats=2"]) == 0
    metrics = read_metrics(out)
    assert len(metrics) == 2 and all(m["latency_ms"] > 0 for m in metrics)
    out = tmp_path / "plain"
    assert main(["train", str(_config(tmp_path, pair_task, 6)), "--output-dir", str(out), "--quiet"]) == 0
    assert all("latency_ms" not in m for m in read_metrics(out))  # off by default: it costs an export per evaluation


def test_export_takes_a_train_run_and_leaves_nothing_when_it_cannot(tmp_path, pair_task, capsys):
    run = tmp_path / "run"
    assert main(["train", str(_config(tmp_path, pair_task, 6)), "--output-dir", str(run), "--quiet"]) == 0
    shipped = tmp_path / "shipped"
    assert main(["export", str(run), "--out", str(shipped), "--onnx"]) == 0
    card = json.loads((shipped / "run" / "card.json").read_text())
    assert card["target_dev"] == json.loads((run / "final_metrics.json").read_text())["target_dev"]
    assert (shipped / "run" / "model.onnx").is_file() and card["onnx_max_logit_diff"] < 1e-4
    assert f"median {card['cpu_latency']['median_ms']:.2f} ms" in (shipped / "run" / "README.md").read_text()
    assert main(["export", str(run), "--out", str(shipped)]) == 2  # never over what is there
    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(a_file)]) == 2
    assert "--out: " in capsys.readouterr().err and a_file.read_text() == "mine"
    weights = run / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated
    assert main(["export", str(run), "--out", str(tmp_path / "again"), "--onnx"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "its exported model cannot be loaded" in err
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())  # nothing blocks a rerun
