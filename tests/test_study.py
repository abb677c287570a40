"""The real-data study's plumbing: experiment selection, valid configs, and RESULTS.md from compact results alone."""
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
import study  # noqa: E402
import study_report  # noqa: E402

from raysearch.cli import main  # noqa: E402
from raysearch.config import config_from_dict  # noqa: E402


def test_only_selects_experiments_in_order_and_rejects_typos():
    assert study.parse_only(["sst2_imdb:0.6"]) == [("sst2_imdb", 0.6, p) for p in study.PARTS]
    assert study.parse_only(["rte_mnli:dense", "sst2_imdb:0.8:rerun"]) == [("rte_mnli", None, "dense"), ("sst2_imdb", 0.8, "rerun")]
    for bad in ("sst2:0.6", "sst2_imdb:high", "sst2_imdb:0.6:searchh", "sst2_imdb"):
        with pytest.raises(SystemExit, match="--only"):
            study.parse_only([bad])


def test_every_experiment_of_a_cell_has_a_valid_config():
    profile = study.PROFILES["cpu"]
    dense, sampler, trials = study.space_of("sst2_imdb", None, "dense", profile, Path("unused"))
    config = config_from_dict(dense.base)
    assert (sampler, trials) == ("grid", 3) and config.pruning.structures == [] and config.pruning.target_sparsity == 0
    baselines, sampler, trials = study.space_of("sst2_imdb", 0.6, "baselines", profile, Path("unused"))
    assert (sampler, trials) == ("grid", 9) and baselines.grid_size() == 9
    search, sampler, trials = study.space_of("rte_mnli", 0.8, "search", profile, Path("unused"), distill=True)
    config = config_from_dict(search.base)
    assert (sampler, trials) == ("tpe", 12) and config.seed == 0 and config.distill.enabled
    assert config.pruning.target_sparsity == 0.8 and search.name == "search-rte_mnli-0.8-distill"


def test_rerun_takes_the_dev_best_config_from_the_search_compact_results(tmp_path):
    profile = study.PROFILES["cpu"]
    with pytest.raises(SystemExit, match="needs the search's compact results"):
        study.space_of("sst2_imdb", 0.6, "rerun", profile, tmp_path)
    search, _, _ = study.space_of("sst2_imdb", 0.6, "search", profile, tmp_path)
    folder = tmp_path / "search-sst2_imdb-0.6"
    folder.mkdir()
    pd.DataFrame({"trial_id": ["a", "b", "c"], "target_dev": [0.70, 0.80, 0.90], "complete": [True, True, False]}).to_parquet(folder / "trials.parquet")
    configs = {t: config_from_dict({**search.base, "transfer": {**search.base["transfer"], "preset": "multitask", "transfer_weight": w}}).to_dict()
               for t, w in (("a", 0.2), ("b", 0.7), ("c", 0.9))}
    (folder / "configs.jsonl").write_text("".join(json.dumps({"trial_id": t, "config": c}) + "\n" for t, c in configs.items()))
    rerun, sampler, trials = study.space_of("sst2_imdb", 0.6, "rerun", profile, tmp_path)
    assert (sampler, trials) == ("grid", 2)  # seeds 1 and 2
    assert rerun.base["transfer"]["transfer_weight"] == 0.7  # "c" scored higher but did not finish
    assert config_from_dict({**rerun.base, "seed": 1}).transfer.transfer_weight == 0.7


def _trials(preset, devs, sparsity=0.6, **extra):
    return pd.DataFrame({"trial_id": [f"{preset}{i}" for i in range(len(devs))], "preset": preset, "seed": range(len(devs)),
                         "target_dev": devs, "target_test": [d - 0.01 for d in devs], "exact_sparsity": sparsity,
                         "remaining_params": 1000 * (1 - sparsity), "full_params": 1000, "target_sparsity": 0.6,
                         "complete": True, **extra})


def test_results_page_comes_from_compact_results_alone(tmp_path, monkeypatch):
    results = tmp_path / "results" / "cpu"
    def save(name, frame):
        (results / name).mkdir(parents=True)
        frame.to_parquet(results / name / "trials.parquet")

    save("dense-sst2_imdb", _trials("searched", [0.85, 0.86, 0.84], sparsity=0.0))
    save("baselines-sst2_imdb-0.6", pd.concat([_trials("no_transfer", [0.70, 0.72, 0.71]), _trials("sequential", [0.60, 0.62, 0.61]),
                                               _trials("multitask", [0.74, 0.73, 0.75])]))
    searched = dict(coupling="tied", transfer_weight=0.5, transfer_start_fraction=0.2, coupling_strength=None,
                    **{f"group_{g}": g == "embeddings" for g in ("embeddings", "attention", "ffn", "layernorm", "masks")})
    save("search-sst2_imdb-0.6", _trials("searched", [0.78, 0.70, 0.69, 0.71], **searched).assign(seed=0))
    save("rerun-sst2_imdb-0.6", _trials("searched", [0.0, 0.77, 0.76], **searched).iloc[1:])
    monkeypatch.setattr(study_report, "RESULTS", tmp_path / "results")
    out = study_report.write_results(results, "cpu", study.PROFILES["cpu"], out=tmp_path / "docs" / "RESULTS.md")
    page = out.read_text()
    assert "| sst2_imdb | dense (unpruned) | 3 | 0.000 | 0.850 ± 0.010 |" in page
    assert "| no_transfer | 3 | 0.600 | 0.710 ± 0.010 |" in page
    assert f"| {study_report.SEARCHED} | 3 | 0.600 | 0.770 ± 0.010 |" in page  # seed 0 from the search, seeds 1-2 re-run
    assert "vs `no_transfer`: beats it by +6.0 dev points (mean over 3 seeds, per-seed differences +8.0, +5.0, +5.0)" in page
    assert "vs `multitask`: beats it by +3.0" in page
    assert "tied, groups embeddings, transfer weight 0.50" in page
    # the verdict across cells: +6 over no_transfer and above both other baselines, in the only cell there is
    assert "| sst2_imdb | 0.6 | 0.770 | 0.760 | +6.0 | +16.0 | +3.0 | yes |" in page
    assert "Met in 1 of 1 cells: not reached" in page  # the goal asks for 2 of the 4
    assert study_report.KEEP_MARKER in page


def test_cell_curves_average_each_method_over_its_seeds_by_step(tmp_path):
    """The learning curves of a cell: each baseline's runs by preset, and the searched configuration's seed-0 trial
    (the dev-best of the search, not the others) with its reruns, as one method."""
    def save(name, trials, history):
        (tmp_path / name).mkdir()
        trials.to_parquet(tmp_path / name / "trials.parquet")
        pd.DataFrame(history, columns=["trial_id", "step", "target_dev"]).to_parquet(tmp_path / name / "history.parquet")

    save("baselines-sst2_imdb-0.6", pd.concat([_trials("no_transfer", [0.70, 0.72]), _trials("multitask", [0.74, 0.76])]),
         [("no_transfer0", 50, 0.60), ("no_transfer0", 100, 0.70), ("no_transfer1", 50, 0.64), ("no_transfer1", 100, 0.72),
          ("multitask0", 50, 0.66), ("multitask0", 100, 0.74), ("multitask1", 50, 0.70), ("multitask1", 100, 0.76)])
    save("search-sst2_imdb-0.6", _trials("searched", [0.69, 0.78]).assign(seed=0),
         [("searched0", 100, 0.69), ("searched1", 100, 0.78)])
    save("rerun-sst2_imdb-0.6", _trials("searched", [0.0, 0.74]).iloc[1:].assign(trial_id="r1"), [("r1", 100, 0.74)])
    curves = study_report.cell_curves(tmp_path, "sst2_imdb", 0.6).set_index(["method", "step"])
    assert curves.loc[("no_transfer", 50), "dev"] == pytest.approx(0.62) and curves.loc[("no_transfer", 100), "seeds"] == 2
    assert curves.loc[("multitask", 100), "dev"] == pytest.approx(0.75)
    assert curves.loc[(study_report.SEARCHED, 100), "dev"] == pytest.approx(0.76)  # 0.78 (seed 0's best) and 0.74
    assert study_report.plot_cell_curves(curves.reset_index(), tmp_path, "c.png", "t") == "c.png" and (tmp_path / "c.png").stat().st_size > 0


def test_a_grid_experiment_runs_without_ray_resumes_and_saves_compact_results(tmp_path, monkeypatch, capsys):
    """`--local-workers`: trials as `python -m raysearch train` processes (a machine with no Ray); a second sitting
    keeps finished runs and continues a stopped one from its checkpoint."""
    from .conftest import tiny_model_config

    def tiny_base(pair, sparsity, profile):
        return {"model": tiny_model_config(), **study.PAIRS[pair]["config"], "target_train_size": 64, "max_steps": 6,
                "batch_size": 8, "eval_every": 3, "checkpoint_every": 3, "eval_max_examples": 32,
                "pruning": {"target_sparsity": sparsity, "warmup_steps": 3}}

    monkeypatch.setattr(study, "base_config", tiny_base)
    monkeypatch.setattr(study, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(sys, "argv", ["study.py", "--local-workers", "2"])
    args = SimpleNamespace(profile="cpu", distill=False, local_workers=2)
    storage, profile = tmp_path / "storage", {**study.PROFILES["cpu"], "seeds": [0, 1]}
    study.run_experiment_locally("sst2_imdb", None, "dense", profile, args, storage)
    out = tmp_path / "results" / "cpu" / "dense-sst2_imdb"
    trials = pd.read_parquet(out / "trials.parquet")
    assert trials["complete"].all() and sorted(trials["seed"]) == [0, 1] and set(trials["target_sparsity"]) == {0.0}
    history = pd.read_parquet(out / "history.parquet")
    assert sorted(history.groupby("trial_id")["step"].apply(list).tolist()) == [[3, 6]] * 2
    assert len((out / "configs.jsonl").read_text().splitlines()) == 2

    # a sitting stopped mid-run: trial_001 as if killed after its step-3 checkpoint (trained to step 3, its end removed)
    stopped = storage / "dense-sst2_imdb" / "trial_001"
    config_file = storage / "dense-sst2_imdb" / "configs" / "trial_001.yaml"
    shutil.rmtree(stopped)
    assert main(["train", str(config_file), "--output-dir", str(stopped), "--quiet", "--keep-checkpoints", "--set", "max_steps=3"]) == 0
    for name in ("final_metrics.json", "model"):
        shutil.rmtree(stopped / name) if (stopped / name).is_dir() else (stopped / name).unlink()
    capsys.readouterr()
    study.run_experiment_locally("sst2_imdb", None, "dense", profile, args, storage)
    assert "1/2 runs finished" in capsys.readouterr().out
    assert json.loads((stopped / "final_metrics.json").read_text())["step"] == 6
    def steps(run):
        return [json.loads(line)["step"] for line in (storage / "dense-sst2_imdb" / run / "metrics.jsonl").read_text().splitlines()]

    assert steps("trial_001") == [3, 6]  # continued after its step-3 checkpoint, not started afresh
    assert steps("trial_000") == [3, 6]  # a finished run was not run again
    sittings = json.loads((out / "experiment.json").read_text())["sittings"]
    assert len(sittings) == 2 and sittings[0]["command"] == "python experiments/study.py --local-workers 2"


def test_the_search_refuses_to_run_without_ray(tmp_path, monkeypatch):
    args = SimpleNamespace(profile="cpu", distill=False, local_workers=2)
    with pytest.raises(SystemExit, match="search needs Ray"):
        study.run_experiment_locally("sst2_imdb", 0.6, "search", study.PROFILES["cpu"], args, tmp_path)


def _pick_trials(dev_gain: float) -> pd.DataFrame:
    """A pick experiment: no_transfer and multitask on 4 seeds (multitask +2 test points on every seed, `dev_gain` on
    dev), sequential on one."""
    rows = []
    for preset, dev, test, seeds in (("no_transfer", 0.70, 0.70, 4), ("multitask", 0.70 + dev_gain, 0.72, 4), ("sequential", 0.60, 0.60, 1)):
        for seed in range(seeds):
            wobble = 0.002 * (seed % 2)
            rows.append({"trial_id": f"{preset}{seed}", "configuration": preset, "preset": preset, "seed": seed,
                         "stage": "confirm" if seed else "baselines", "coupling": "none" if preset == "no_transfer" else "tied",
                         "target_sparsity": 0.6, "target_dev": dev + wobble, "target_test": test + wobble, "complete": True})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("dev_gain, met", [(0.02, "yes"), (0.0, "no")])
def test_pick_lines_hold_the_pick_to_a_baseline_that_beats_no_transfer_on_test(tmp_path, dev_gain, met):
    folder = tmp_path / study.experiment_name("sst2_imdb", 0.6, study.PICK)
    folder.mkdir()
    _pick_trials(dev_gain).to_parquet(folder / "trials.parquet")
    text = "\n".join(study_report.pick_lines(tmp_path))
    assert f"a baseline beats no_transfer by 1 point or more on test (multitask +2.0 (4 seeds)), so the pick must too: {met}" in text
