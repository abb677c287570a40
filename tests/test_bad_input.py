"""Bad configs and data fail before training with one line naming the field and the fix."""
import json
import sys

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
    (out / "checkpoints" / "step_000002").mkdir(parents=True)
    (out / "checkpoints" / "step_000002" / "checkpoint.pt").write_bytes(b"x")
    (out / "metrics.jsonl").write_text('{"step": 1}\n')
    config = _write_config(tmp_path, pair_task)
    _fails(capsys, ["train", str(config), "--output-dir", str(out)], "output_dir", "already holds a run", "--resume")
    assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "metrics.jsonl"]
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "fresh"), "--resume"], "--resume", "no checkpoint")


def test_a_users_own_folder_or_a_file_is_refused(tmp_path, capsys, pair_task):
    config = _write_config(tmp_path, pair_task)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my own notes\n")
    _fails(capsys, ["train", str(config), "--output-dir", str(mine)], "--output-dir", "not a raysearch run")
    assert (mine / "config.yaml").read_text() == "my own notes\n" and len(list(mine.iterdir())) == 1
    (tmp_path / "afile").write_text("x")
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "afile")], "--output-dir", "is a file")


def test_a_run_stopped_before_its_first_checkpoint_can_be_started_again(tmp_path, capsys, pair_task):
    """A run that died before its first checkpoint leaves a folder that neither blocks a new run nor loses its metrics."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "raysearch_run.json").write_text("{}")
    (out / "config.yaml").write_text("max_steps: 4\n")
    (out / "metrics.jsonl").write_text('{"step": 2}\n')
    config = _write_config(tmp_path, pair_task)
    assert main(["train", str(config), "--output-dir", str(out), "--quiet"]) == 0
    kept = list(out.glob("metrics.stopped-*.jsonl"))
    assert len(kept) == 1 and kept[0].read_text() == '{"step": 2}\n'
    assert json.loads((out / "final_metrics.json").read_text())["step"] == 4


def test_resume_with_changed_settings_records_what_changed(tmp_path, capsys, pair_task):
    out = tmp_path / "out"
    config = _write_config(tmp_path, pair_task, checkpoint_every=2)
    assert main(["train", str(config), "--output-dir", str(out), "--quiet", "--keep-checkpoints"]) == 0
    capsys.readouterr()
    assert main(["train", str(config), "--output-dir", str(out), "--resume", "--quiet", "--set", "max_steps=6"]) == 0
    assert "changed settings: max_steps 4 -> 6" in capsys.readouterr().err
    record = json.loads((out / "config_changes.jsonl").read_text())
    assert record == {"step": 4, "changes": {"max_steps": [4, 6]}}
    assert yaml.safe_load((out / "config.yaml").read_text())["max_steps"] == 6


def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys, pair_task):
    out = tmp_path / "out"
    config = _write_config(tmp_path, pair_task, checkpoint_every=2)
    assert main(["train", str(config), "--output-dir", str(out), "--quiet", "--keep-checkpoints"]) == 0
    newest = out / "checkpoints" / "step_000004" / "checkpoint.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # cut short, as by a full disk
    capsys.readouterr()
    assert main(["train", str(config), "--output-dir", str(out), "--resume", "--quiet", "--set", "max_steps=6"]) == 0
    err = capsys.readouterr().err
    assert "step_000004" in err and "step_000002" in err and "cannot be read" in err


def test_a_checkpoint_of_another_model_is_one_line(tmp_path, capsys, pair_task):
    out = tmp_path / "out"
    config = _write_config(tmp_path, pair_task, checkpoint_every=2)
    assert main(["train", str(config), "--output-dir", str(out), "--quiet", "--keep-checkpoints"]) == 0
    capsys.readouterr()
    before = (out / "config.yaml").read_text()
    _fails(capsys, ["train", str(config), "--output-dir", str(out), "--resume", "--set", "model.tiny.hidden_size=64"],
           "--resume", "model.tiny.hidden_size 32, this config 64", "config.yaml")
    assert (out / "config.yaml").read_text() == before and not (out / "config_changes.jsonl").exists()


def test_the_loop_names_a_checkpoint_that_does_not_fit_its_model(tmp_path, pair_task):
    """Whoever resumes (the CLI, a Ray worker), a checkpoint of another shape is one UserInputError."""
    from raysearch.errors import UserInputError
    from raysearch.trainer import JointTrainer

    from .conftest import tiny_model_config, tiny_train_config

    small = JointTrainer(tiny_train_config(pair_task))
    wide = JointTrainer(tiny_train_config(pair_task, model=tiny_model_config(hidden_size=64)))
    with pytest.raises(UserInputError, match="holds another model's weights"):
        wide.load_state_dict(small.state_dict(), source="step_000002")


# ------------------------------------------------------------------ every field's type, the file itself


@pytest.mark.parametrize("change,fragments", [
    ({"max_steps": "ten"}, ["max_steps", "whole number", "'ten'"]),
    ({"batch_size": 2.5}, ["batch_size", "whole number", "2.5"]),
    ({"seed": "abc"}, ["seed", "whole number"]),
    ({"target": None}, ["target", "is empty"]),
    ({"transfer": {"coupling": "tied", "groups": "ffn"}}, ["transfer.groups", "list of names", "[ffn]"]),
    ({"pruning": {"structures": "head"}}, ["pruning.structures", "[head]"]),
    ({"distill": {"enabled": "yes"}}, ["distill.enabled", "true or false"]),
    ({"model": {"tiny": {"architecture": "bert", "hidden_size": 30, "num_attention_heads": 4}}}, ["model.tiny.hidden_size", "multiple of num_attention_heads"]),
    ({"model": {"tiny": {"architecture": "bert", "hiden_size": 32}}}, ["model.tiny.hiden_size", "unknown key", "hidden_size"]),
    ({"model": {"name_or_path": "/nonexistent/model", "tiny": None}}, ["model.name_or_path", "/nonexistent/model"]),
])
def test_every_field_is_type_checked_and_named(tmp_path, capsys, pair_task, change, fragments):
    config = _write_config(tmp_path, pair_task)
    data = yaml.safe_load(config.read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    config.write_text(yaml.safe_dump(data))
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], *fragments)
    assert not (tmp_path / "out").exists()


def test_an_empty_optional_section_means_its_defaults(tmp_path, pair_task):
    from raysearch.config import config_from_dict

    config = config_from_dict({"target": {"source": str(pair_task)}, "pruning": None, "distill": None})
    assert config.pruning.target_sparsity == 0.6 and not config.distill.enabled


@pytest.mark.parametrize("text,fragments", [
    ("- just\n- a list\n", ["config", "must be a mapping", "a list"]),
    ("target: {source: x\nmax_steps: 3\n", ["config.yaml", "not valid YAML", "line", "column"]),
])
def test_a_config_file_that_is_not_a_config(tmp_path, capsys, text, fragments):
    config = tmp_path / "config.yaml"
    config.write_text(text)
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], *fragments)


def test_a_config_file_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_bytes("target: {source: caf\u00e9}\n".encode("latin-1"))
    _fails(capsys, ["train", str(config)], "config.yaml", "not UTF-8", "byte")


def test_an_override_that_is_not_yaml(tmp_path, capsys, pair_task):
    config = _write_config(tmp_path, pair_task)
    _fails(capsys, ["train", str(config), "--set", "transfer.groups=[ffn,"], "--set transfer.groups", "not valid YAML", "quote")


def test_cuda_asked_for_without_cuda(tmp_path, capsys, pair_task):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = _write_config(tmp_path, pair_task, device="cuda")
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], "device", "no CUDA", "auto")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ data files


def _data(tmp_path, train: str, dev: str, suffix: str = ".tsv"):
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    (folder / f"train{suffix}").write_text(train)
    (folder / f"dev{suffix}").write_text(dev)
    return folder


GOOD_DEV = "sentence\tlabel\nfine\t1\nawful\t0\n"


@pytest.mark.parametrize("files,fragments", [
    (("sentence\tlabel\ngood\t1\nbad\t0\textra\nok\t1\n", GOOD_DEV, ".tsv"), ["train.tsv, line 3", "3 fields", "header has 2"]),
    (('{"sentence": "good", "label": 1}\n{"sentence": "bad", "label": 0\n', '{"sentence": "fine", "label": 1}\n', ".jsonl"),
     ["train.jsonl, line 2", "not valid JSON"]),
    (("sentence\tlabel\ngood\t1\nbad\t\nok\t0\n", GOOD_DEV, ".tsv"), ["target.label_column", "train.tsv, line 3", "'label' cell is empty"]),
    (("sentence\tlabel\ngood\t1\nbad\t0\n", "sentence\tlabel\nfine\t1\nodd\t5\n", ".tsv"), ["target.label_column", "label 5", "never occurs in the training split"]),
    (("good words\nbad words\n", "fine\n", ".txt"), ["target.source", "plain text", "kind: mlm"]),
])
def test_broken_data_files_are_named_with_their_line(tmp_path, capsys, files, fragments):
    data = _data(tmp_path, *files)
    config = _write_config(tmp_path, data)
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], *fragments)
    assert not (tmp_path / "out").exists()


def test_a_given_transfer_task_is_checked_even_without_transfer(tmp_path, capsys, pair_task):
    config = _write_config(tmp_path, pair_task, transfer={"preset": "no_transfer", "task": {"source": str(tmp_path / "typo")}})
    _fails(capsys, ["train", str(config), "--output-dir", str(tmp_path / "out")], "transfer.task")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ searches


def test_user_input_errors_survive_copy_and_pickle():
    import copy
    import pickle

    from raysearch.errors import UserInputError

    error = UserInputError("pruning.target_sparsity", "must be in [0, 1)", "e.g. 0.6")
    for clone in (copy.copy(error), copy.deepcopy(error), pickle.loads(pickle.dumps(error))):
        assert (clone.where, clone.problem, clone.fix, str(clone)) == (error.where, error.problem, error.fix, str(error))


def test_a_misspelled_parameter_path_fails_before_ray_starts(tmp_path, capsys):
    import sys

    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump({"description": "typo", "base_file": "base.yaml",
                                     "parameters": {"pruning.target_sparsityy": {"choices": [0.5, 0.6]}}}))
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"target": {"source": "x"}}))
    _fails(capsys, ["launch", str(space), "--storage-path", str(tmp_path / "exp")],
           "parameters.pruning.target_sparsityy", "not a config field", "target_sparsity")
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("name", ["a/b", "../up", "..", "x..y"])
def test_an_experiment_name_is_one_plain_folder_name(tmp_path, capsys, name):
    _fails(capsys, ["launch", "demo", "--storage-path", str(tmp_path / "exp"), "--name", name], "--name", "plain folder name")
    assert not (tmp_path / "exp").exists()


def test_launch_of_an_existing_experiment_fails_before_ray_starts(tmp_path, capsys):
    existing = tmp_path / "exp" / "mine"
    existing.mkdir(parents=True)
    (existing / "raysearch_experiment.json").write_text("{}")
    (existing / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    _fails(capsys, ["launch", "demo", "--storage-path", str(tmp_path / "exp"), "--name", "mine"], "--name", "already holds an experiment", "resume")
    assert sorted(p.name for p in existing.iterdir()) == ["experiment_state-2026-01-01_00-00-00.json", "raysearch_experiment.json"]


SECRET = "s3cret-pw"


def test_a_password_in_the_optuna_url_is_never_shown_or_stored(tmp_path, capsys):
    import pickle

    from raysearch.distributed.search import PasswordFreeRDBStorage
    from raysearch.redact import redact_url

    url = f"postgresql://alice:{SECRET}@127.0.0.1:1/studies"
    assert redact_url(url) == "postgresql://alice:***@127.0.0.1:1/studies"
    assert redact_url("postgresql://alice:p@ss@h/db") == "postgresql://alice:***@h/db"  # the last "@" ends the password
    for plain in ("sqlite:///study.db", "postgresql://alice@h/db", "s3://bucket/exp"):
        assert redact_url(plain) == plain
    # an unreachable storage fails before Ray starts, without the password in its line
    err = _fails(capsys, ["launch", "demo", "--storage-path", str(tmp_path / "exp"), "--optuna-storage", url],
                 "--optuna-storage", "postgresql://alice:***@127.0.0.1:1/studies")
    assert SECRET not in err and not (tmp_path / "exp").exists()
    # a submitted job's command line is public on the dashboard: refused before any contact with it
    err = _fails(capsys, ["launch", "demo", "--submit", "--dashboard", "http://127.0.0.1:9", "--storage-path", str(tmp_path / "exp"),
                          "--optuna-storage", url], "--optuna-storage", "job's command line", "PGPASSWORD")
    assert SECRET not in err
    # the searcher's storage is pickled by Tune into the experiment: without the password
    storage = PasswordFreeRDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    storage.url = url
    assert SECRET not in pickle.dumps(storage).decode("latin-1") and storage.__getstate__()["url"] == redact_url(url)


def test_resuming_a_search_whose_storage_had_a_password_asks_for_it(tmp_path, capsys):
    experiment = tmp_path / "exp" / "pw"
    experiment.mkdir(parents=True)
    from search_spaces import load_space

    meta = {"name": "pw", "space": load_space("demo").to_dict(), "settings": {"optuna_storage": "postgresql://alice:***@h/db"}}
    (experiment / "raysearch_experiment.json").write_text(json.dumps(meta))
    _fails(capsys, ["resume", str(experiment)], "--optuna-storage", "needs its password", "--optuna-storage URL")
    _fails(capsys, ["resume", str(experiment), "--optuna-storage", f"postgresql://bob:{SECRET}@h/db"], "not this experiment's")


@pytest.mark.parametrize("argv, fragments", [
    (["--cpus-per-worker", "-1"], ["--cpus-per-worker", "must be >= 0"]),
    (["--gpus-per-worker", "1.5"], ["--gpus-per-worker", "neither a fraction in (0, 1] nor a whole number", "0.25"]),
    (["--gpus-per-worker", "-0.5"], ["--gpus-per-worker"]),
    (["--repeats", "0"], ["--repeats", ">= 1"]),
    (["--confirm-seeds", "-1"], ["--confirm-seeds", ">= 0"]),
    (["--set", "max_steps=-1"], ["--set max_steps", "must be >= 1"]),  # the base after --set, before Ray: the --set is named
])
def test_search_options_and_the_base_are_checked_before_ray_starts_naming_the_option(tmp_path, capsys, argv, fragments):
    import sys

    _fails(capsys, ["launch", "demo", "--storage-path", str(tmp_path / "exp"), *argv], *fragments)
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()
    assert not (tmp_path / "exp").exists()


def test_a_sampled_value_out_of_range_fails_before_ray_starts_naming_the_field_and_the_space_file(tmp_path, capsys):
    from search_spaces import load_space

    space = load_space("demo").to_dict()
    space["parameters"]["pruning.target_sparsity"] = {"choices": [0.5, 1.5]}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in space.items() if k in ("description", "base", "parameters")}))
    _fails(capsys, ["launch", str(path), "--storage-path", str(tmp_path / "exp")],
           str(path), "parameters.pruning.target_sparsity: the value 1.5: must be in [0, 1)")
    assert not (tmp_path / "exp").exists()


def test_fractional_gpus_are_what_each_worker_asks_ray_for():
    from raysearch.distributed.settings import SearchSettings
    from raysearch.distributed.trial import scaling_config, trial_resources

    quarter = scaling_config(SearchSettings(workers_per_trial=2, cpus_per_worker=1, gpus_per_worker=0.25))
    assert quarter.num_workers == 2 and quarter.use_gpu and quarter.resources_per_worker == {"CPU": 1, "GPU": 0.25}
    assert scaling_config(SearchSettings(gpus_per_worker=2)).resources_per_worker == {"CPU": 1.0, "GPU": 2}
    cpu = scaling_config(SearchSettings())
    assert not cpu.use_gpu and cpu.resources_per_worker == {"CPU": 1.0}
    # a 1-worker trial trains in Tune's trial process, which asks for the worker's share; a multi-worker trial's
    # process asks for no CPU (its Train workers hold them)
    assert trial_resources(SearchSettings(gpus_per_worker=0.25)) == {"cpu": 1.0, "gpu": 0.25}
    assert trial_resources(SearchSettings(cpus_per_worker=2)) == {"cpu": 2}
    assert trial_resources(SearchSettings(workers_per_trial=2, gpus_per_worker=0.25))["cpu"] == 0


def test_a_dashboard_address_without_a_scheme_is_refused_at_once(capsys):
    _fails(capsys, ["jobs", "--dashboard", "127.0.0.1:8265"], "--dashboard", "no scheme", "http://127.0.0.1:8265")


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_a_tracker_that_is_not_installed_is_one_line_naming_the_install(tmp_path, capsys, monkeypatch, tracker):
    monkeypatch.setitem(sys.modules, tracker, None)  # as on a machine without the extra: it cannot be imported
    _fails(capsys, ["launch", "demo", "--storage-path", str(tmp_path / "exp"), "--callback", tracker],
           "--callback", f"{tracker} is not installed", f"pip install 'raysearch[{tracker}]'")
    assert not (tmp_path / "exp").exists()


def _symlink_loop(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    return ["--output-dir", str(loop)]


def _fifo_data(tmp_path):
    import os

    folder = tmp_path / "fifo_task"
    folder.mkdir()
    os.mkfifo(folder / "train.tsv")
    return ["--set", f"target.source={folder / 'train.tsv'}"]


def _huge_value(tmp_path):
    return ["--set", f"learning_rate={'x' * 5000}"]  # as YAML aliases can expand a short file's value to megabytes


@pytest.mark.parametrize("make_args, fragments", [
    (_symlink_loop, ("--output-dir", "symlink that leads nowhere")),
    (lambda tmp_path: ["--output-dir", "/sys/raysearch_out"], ("--output-dir", "/sys", "give a folder you can write to")),
    (lambda tmp_path: ["--set", "eval_max_examples=0"], ("eval_max_examples", "must be >= 1", "omit it")),
    (_fifo_data, ("target.source", "is not a regular file")),
    (lambda tmp_path: ["--set", "lr_warmup_steps=50"], ("lr_warmup_steps", "beyond max_steps=4", "at most 4")),
    (lambda tmp_path: ["--set", "pruning.target_sparsity=60%"], ("pruning.target_sparsity", "'60%' is not a number", "target_sparsity: 0.6")),
    (_huge_value, ("learning_rate", "(5,002 characters)")),
], ids=["output-dir-symlink-loop", "output-dir-unwritable", "eval-max-examples-0", "fifo-data-file", "lr-warmup-beyond-max-steps", "percent-sparsity", "huge-value"])
def test_the_last_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, pair_task, make_args, fragments):
    config = _write_config(tmp_path, pair_task)
    out = tmp_path / "out"
    args = make_args(tmp_path)
    argv = ["train", str(config), *(args if "--output-dir" in args else ["--output-dir", str(out), *args])]
    err = _fails(capsys, argv, *fragments)
    assert len(err) < 400 and not out.exists()


def test_a_label_column_that_looks_like_an_id_is_warned_about(tmp_path, capsys):
    from raysearch.tasks import warn_if_too_many_classes

    assert warn_if_too_many_classes([0, 1] * 50, 2, "target") is None
    line = warn_if_too_many_classes(list(range(100)), 100, "target")
    assert "target.label_column: 100 classes for 100 training examples, 100 of them with fewer than 2" in line
    assert line in capsys.readouterr().err


def test_a_bad_set_value_on_a_launch_names_the_set_not_the_space_and_a_space_yaml_error_has_its_line(tmp_path, capsys):
    _fails(capsys, ["launch", "demo", "--storage-path", str(tmp_path / "exp"), "--set", "pruning.target_sparsity=1.5"],
           "--set pruning.target_sparsity", "[0, 1)")
    space = tmp_path / "space.yaml"
    space.write_text("description: d\nparameters:\n  pruning.target_sparsity: {choices: [0.5\n")
    _fails(capsys, ["launch", str(space), "--storage-path", str(tmp_path / "exp")], "space.yaml", "line", "column")
    assert not (tmp_path / "exp").exists()


def test_a_config_stored_with_the_retired_fault_field_still_loads_and_keeps_its_configuration_id(tmp_path):
    """Experiments searched before fault injection became an environment hook stored `fault_inject_step: null` in every
    trial config: they still load, and their configurations keep the ids their search recorded (a resume matches
    seeds by them). A value set there is refused like any unknown field."""
    import hashlib

    from raysearch.config import config_from_dict
    from raysearch.errors import UserInputError

    from .conftest import tiny_train_config

    current = tiny_train_config(tmp_path / "data").to_dict()
    stored = {**current, "fault_inject_step": None}
    before = hashlib.sha1(json.dumps({k: v for k, v in stored.items() if k != "seed"}, sort_keys=True, default=str).encode())
    assert config_from_dict(stored).configuration_id() == config_from_dict(current).configuration_id() == before.hexdigest()[:10]
    with pytest.raises(UserInputError, match="fault_inject_step: unknown field"):
        config_from_dict({**current, "fault_inject_step": 5})
