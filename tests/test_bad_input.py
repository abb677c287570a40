"""Bad configs and data fail before training with one line naming the field and the fix."""

import pytest

from raysearch.cli import main

from .conftest import tiny_model_config, write_tsv

import yaml


def _write_config(tmp_path, source, **sections):
    config = {"model": tiny_model_config(), "target": {"source": str(source)}, "max_steps": 4, "batch_size": 4, "eval_every": 2,
              "pruning": {"warmup_steps": 2}}
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fails(capsys, argv, *fragments):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.mark.parametrize("transfer,fragments", [
    ({"coupling": "tied", "groups": ["attention", "ffnn"]}, ["transfer.groups", "'ffnn'", "choose from embeddings"]),
    ({"coupling": "loose", "groups": ["ffn"]}, ["transfer.coupling", "'loose'", "tied, soft, none"]),
    ({"preset": "distill"}, ["transfer.preset", "'distill'", "no_transfer"]),
    ({"coupling": "tied", "groups": ["ffn"], "transfer_weight": -1}, ["transfer.transfer_weight", ">= 0"]),
    ({"coupling": "soft", "groups": ["ffn"], "coupling_strength": -0.5}, ["transfer.coupling_strength", ">= 0"]),
    ({"coupling": "tied", "groups": ["ffn"], "transfer_start_step": 50}, ["transfer.transfer_start_step", "beyond max_steps=4"]),
    ({"coupling": "tied", "groups": []}, ["transfer.groups", "empty"]),
    ({"preset": "multitask", "coupling": "soft"}, ["transfer.coupling", "preset 'multitask'"]),
    ({"coupling": "tied", "groups": ["ffn"], "colour": "red"}, ["transfer.colour", "unknown field"]),
])
def test_bad_transfer_config(tmp_path, capsys, pair_task, transfer, fragments):
    config = _write_config(tmp_path, pair_task, transfer={"task": {"source": str(pair_task)}, **transfer})
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], *fragments)
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_override_and_missing_file(tmp_path, capsys, pair_task):
    config = _write_config(tmp_path, pair_task)
    _fails(capsys, ["train", str(config), "--set", "pruning.target_sparsity=1.5"], "pruning.target_sparsity", "[0, 1)")
    _fails(capsys, ["train", str(config), "--set", "learning_rate=fast"], "learning_rate", "not a number")
    _fails(capsys, ["train", str(tmp_path / "nope.yaml")], "nope.yaml", "not found")


def test_missing_column(tmp_path, capsys):
    data = tmp_path / "data"
    write_tsv(data / "train.tsv", ["text", "label"], [("good", 1), ("bad", 0)] * 4)
    write_tsv(data / "dev.tsv", ["text", "label"], [("fine", 1), ("awful", 0)])
    config = _write_config(tmp_path, data, target={"text_columns": ["sentence"]})
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], "target.text_columns", "'sentence'", "columns: text, label")
    config = _write_config(tmp_path, data, target={"label_column": "gold"})
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], "target.label_column", "'gold'")


def test_labels_out_of_range(tmp_path, capsys):
    data = tmp_path / "data"
    write_tsv(data / "train.tsv", ["sentence", "label"], [("good", 1), ("bad", 0)] * 4)
    write_tsv(data / "dev.tsv", ["sentence", "label"], [("fine", 1), ("odd", 5)])
    config = _write_config(tmp_path, data, target={"num_labels": 2})
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], "target.label_column", "dev split", "1..5", "outside 0..1")


def test_empty_dataset(tmp_path, capsys):
    data = tmp_path / "data"
    write_tsv(data / "train.tsv", ["sentence", "label"], [])
    write_tsv(data / "dev.tsv", ["sentence", "label"], [("fine", 1)])
    config = _write_config(tmp_path, data)
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], "target.source", "empty")


def test_output_dir_that_holds_a_run_is_not_touched(tmp_path, capsys, pair_task):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    config = _write_config(tmp_path, pair_task)
    _fails(capsys, ["train", str(config), "--output-dir", str(out)], "output_dir", "already holds a run", "--resume")
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert sorted(p.name for p in out.iterdir()) == ["metrics.jsonl"]
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "fresh"), "--resume"], "--resume", "no checkpoint")
