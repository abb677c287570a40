"""analysis/: fronts, hypervolume, aggregation, effects and frames on synthetic data with known answers."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import (analyze, attainment_front, baseline_comparison, best_per_sparsity_bin, factor_effects, heldout_check,
                      hypervolume, hypervolume_history, load_frame, param_importances, pareto_front, pareto_rank, save_frames,
                      trial_frame, write_outputs)
from analysis.frames import history_frame
from analysis.report import render_markdown
from raysearch.cli import main
from raysearch.errors import UserInputError
from raysearch.config import GROUPS
from search_spaces import load_space

FULL = 1000


def frame(points, **columns) -> pd.DataFrame:
    """Trials at (quality, remaining params); extra columns broadcast or given per row."""
    f = pd.DataFrame(points, columns=["target_dev", "remaining_params"])
    f["full_params"] = FULL
    f["exact_sparsity"] = 1 - f["remaining_params"] / FULL
    f["experiment"] = "synthetic"
    f["trial_id"] = [f"t{i}" for i in range(len(f))]
    f["trial_index"] = range(1, len(f) + 1)
    for name, value in columns.items():
        f[name] = value
    return f


# ------------------------------------------------------------------ fronts


def test_front_of_a_known_set_with_a_tie_and_a_nan():
    f = frame([(0.9, 800), (0.8, 500), (0.7, 500), (0.8, 500), (0.6, 200), (0.5, 300), (np.nan, 100)])
    rank = pareto_rank(f)
    assert rank.tolist()[:6] == [0, 0, 1, 0, 0, 1] and math.isnan(rank.iloc[6])  # the tie (rows 1, 3) is on the front twice
    assert pareto_front(f)["trial_id"].tolist() == ["t0", "t1", "t3", "t4"]  # best quality first


def test_single_trial_is_its_own_front_and_mixed_directions():
    assert pareto_front(frame([(0.7, 400)]))["trial_id"].tolist() == ["t0"]
    f = frame([(0.9, 800), (0.5, 200), (0.6, 900)])
    # both minimised: lower quality is "better" -> (0.5, 200) dominates everything
    assert pareto_front(f, [("target_dev", "min"), ("remaining_params", "min")])["trial_id"].tolist() == ["t1"]
    # both maximised: (0.9, 800) and (0.6, 900) are the front
    assert set(pareto_front(f, [("target_dev", "max"), ("remaining_params", "max")])["trial_id"]) == {"t0", "t2"}


def test_fronts_per_group():
    f = frame([(0.9, 800), (0.8, 900), (0.7, 600), (0.6, 700)], coupling=["tied", "tied", "soft", "soft"])
    fronts = pareto_front(f, by="coupling")
    assert sorted(fronts["trial_id"]) == ["t0", "t2"]


# ------------------------------------------------------------------ hypervolume


def test_hypervolume_against_hand_computed_values():
    # reference (quality 0, 1000 params); points (0.8, 500) and (0.6, 200) ->
    # union of rectangles [0,0.8]x[500,1000] and [0,0.6]x[200,1000] = 0.8*500 + 0.6*300 = 580, / 1000
    f = frame([(0.8, 500), (0.6, 200), (0.5, 600)])
    assert hypervolume(f) == pytest.approx(0.58)
    assert hypervolume(f.iloc[:1]) == pytest.approx(0.4)
    assert hypervolume(f, reference=[0.5, 1000]) == pytest.approx((0.3 * 500 + 0.1 * 300) / 1000)
    assert hypervolume(frame([(0.9, 1200)])) == 0.0  # worse than the reference in one objective: nothing
    history = hypervolume_history(f)
    assert history["hypervolume"].round(6).tolist() == [0.4, 0.58, 0.58]


def test_hypervolume_needs_a_reference_for_unknown_objectives():
    f = frame([(0.8, 500)], latency=3.0)
    with pytest.raises(UserInputError, match="objective latency: has no default hypervolume reference point"):
        hypervolume(f, [("target_dev", "max"), ("latency", "min")])
    assert hypervolume(f, [("target_dev", "max"), ("latency", "min")], reference=[0, 5]) == pytest.approx(0.8 * 2)


# ------------------------------------------------------------------ aggregation


def test_best_per_bin_and_attainment_across_seeds():
    f = frame([(0.80, 400), (0.70, 390), (0.60, 200), (0.74, 410), (0.50, 210), (0.66, 190)], seed=[0, 0, 0, 1, 1, 1])
    per_bin = best_per_sparsity_bin(f, sets="seed").set_index("sparsity_bin")
    assert per_bin.loc[0.6, "mean"] == pytest.approx((0.80 + 0.74) / 2) and per_bin.loc[0.6, "seeds"] == 2
    assert per_bin.loc[0.8, "mean"] == pytest.approx((0.60 + 0.66) / 2)
    assert per_bin.loc[0.8, "std"] == pytest.approx(np.std([0.60, 0.66], ddof=1))
    # seed 0's front {(0.8,400),(0.7,390),(0.6,200)}, seed 1's {(0.74,410),(0.66,190)}: the 100% surface holds the
    # points both attain, the worse corner of each crossing
    both = attainment_front(f, sets="seed", percentile=100)
    assert both.round(6).values.tolist() == [[0.74, 410.0], [0.66, 390.0], [0.6, 200.0]]


# ------------------------------------------------------------------ held-out check and baselines


def test_heldout_check_measures_selection_optimism():
    f = frame([(0.9, 500), (0.6, 500), (0.7, 300)], target_test=[0.7, 0.6, 0.7])
    check = heldout_check(f)
    assert check.points["trial_id"].tolist() == ["t0", "t2"]
    assert check.front_gap == pytest.approx(((0.9 - 0.7) + 0.0) / 2)
    assert check.all_gap == pytest.approx((0.2 + 0.0 + 0.0) / 3)
    assert check.test_front_share == 0.5  # on test, t2 (0.7, 300) dominates t0 (0.7, 500)
    assert check.points["test_minus_dev"].tolist() == pytest.approx([-0.2, 0.0])  # the sign its name and the report say
    assert heldout_check(frame([(0.9, 500)])) is None  # no test column: nothing to check


def test_the_report_tables_name_each_column_once():
    from analysis.report import render_markdown

    f = frame([(0.9, 500), (0.7, 300)], target_test=[0.8, 0.7], model="all-MiniLM-L6-v2", export_dir=["e/models/t0", "e/models/t1"],
              preset="searched", coupling="none", seed=0, target_sparsity=0.5)
    report = render_markdown(analyze(f, n_boot=50), {"front": "f.png", "effects": "e.png", "hypervolume": "h.png"})
    lines = report.splitlines()
    headers = [lines[i - 1] for i, line in enumerate(lines) if line.startswith("| ---") or line.startswith("| --- |")]
    assert any("exported model" in h for h in headers)
    for line in headers:
        header = [c.strip() for c in line.strip("|").split("|")]
        assert len(header) == len(set(header)), line
    assert "Test minus dev over the dev-selected front: -0.050" in report and "test_minus_dev" in report


def test_baseline_comparison_per_sparsity_bin():
    f = frame([(0.60, 400), (0.64, 400), (0.70, 410), (0.65, 395)], preset=["no_transfer", "no_transfer", "searched", "searched"],
              target_test=[0.58, 0.62, 0.66, 0.69])
    table = baseline_comparison(f).set_index("method")
    assert table.loc["no_transfer", "dev_mean"] == pytest.approx(0.62) and table.loc["no_transfer", "trials"] == 2
    assert table.loc["searched (best on dev)", "dev_mean"] == 0.70 and table.loc["searched (best on dev)", "test_mean"] == 0.66


# ------------------------------------------------------------------ factor effects


def _factorial(seed=0, n=48):
    """Trials where tied coupling adds +0.05 quality and sparsity costs 0.3 per unit; tied trials are
    over-represented at high sparsity, so a naive comparison (unmatched) would hide the gain."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        sparsity = 0.8 if i % 3 else 0.6
        coupling = ("tied" if rng.random() < (0.8 if sparsity == 0.8 else 0.2) else "soft")
        groups = {f"group_{g}": bool(rng.random() < 0.5) for g in GROUPS}
        quality = 0.9 - 0.3 * sparsity + (0.05 if coupling == "tied" else 0.0) + rng.normal(0, 0.005)
        rows.append({"target_dev": quality, "remaining_params": (1 - sparsity) * FULL, "coupling": coupling, **groups,
                     "transfer_start_fraction": rng.uniform(0, 0.8), "transfer_weight": rng.uniform(0.1, 2),
                     "coupling_strength": 0.01 if coupling == "soft" else np.nan, "target_sparsity": sparsity,
                     "preset": "searched", "seed": i % 3})
    return frame([(r["target_dev"], r["remaining_params"]) for r in rows], **pd.DataFrame(rows).drop(columns=["target_dev", "remaining_params"]))


def test_factor_effect_is_measured_at_matched_sparsity_with_an_interval():
    f = _factorial()
    effects = factor_effects(f, n_boot=300).set_index(["factor", "level"])
    tied = effects.loc[("coupling mode", "tied")]
    assert tied["effect"] == pytest.approx(0.05, abs=0.01) and tied["ci_low"] > 0.03 and tied["ci_high"] < 0.07
    naive = f[f["coupling"] == "tied"]["target_dev"].mean() - f[f["coupling"] == "soft"]["target_dev"].mean()
    assert naive < 0.03  # the confounded comparison understates it
    for g in GROUPS:  # groups do nothing here; what they pick up is chance overlap with tied coupling
        assert abs(effects.loc[(f"group {g}", "on"), "effect"]) < 0.02


def test_importances_rank_the_planted_factor_first():
    importances = param_importances(_factorial())
    assert importances.index[0] in ("coupling", "target_sparsity")
    assert set(importances.index[:2]) == {"coupling", "target_sparsity"}


def test_analysis_end_to_end_on_synthetic_trials_writes_every_output(tmp_path):
    f = _factorial().assign(target_test=lambda x: x["target_dev"] - 0.02, complete=True)
    baselines = frame([(0.60, 200), (0.62, 200), (0.70, 400)], preset=["no_transfer", "no_transfer", "multitask"],
                      coupling=["none", "none", "tied"], seed=[0, 1, 0], target_test=[0.58, 0.6, 0.69], complete=True)
    f = pd.concat([f, baselines.assign(trial_id=["b0", "b1", "b2"])], ignore_index=True)
    result = analyze(f, objectives=[("target_dev", "max"), ("remaining_params", "min")], n_boot=100)
    coupling = result.effects[result.effects["factor"] == "coupling mode"]
    assert coupling["trials"].sum() == 48  # the 48 searched trials; baselines are compared separately
    written = write_outputs(result, tmp_path / "out")
    for name in ("trials.parquet", "trials.csv", "history.csv", "front.csv", "effects.csv", "front.png", "effects.png",
                 "hypervolume.png", "report.md"):
        assert (tmp_path / "out" / name).is_file() and name in written
    report = (tmp_path / "out" / "report.md").read_text()
    assert "### How to couple" in report and "coupling mode**: best level `tied`" in report and "clear" in report
    assert "![front](front.png)" in report
    baseline_table = report.split("## Baselines")[1]
    assert "| 0.800 | no_transfer | 2 | 0.610 |" in baseline_table and "searched (best on dev)" in baseline_table
    write_outputs(result, tmp_path / "out")  # an earlier analysis may be overwritten by a rerun
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="is not empty and holds no earlier analysis"):
        write_outputs(result, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def test_frames_round_trip_through_parquet_and_csv(tmp_path):
    f = _factorial(n=6)
    save_frames({"trials": f}, tmp_path)
    for suffix in ("parquet", "csv"):
        back = load_frame(tmp_path / f"trials.{suffix}")
        assert back.shape == f.shape
        assert np.allclose(back["target_dev"], f["target_dev"])


# ------------------------------------------------------------------ experiment folders (the files Tune writes)


def _write_experiment(root, trials):
    """An experiment folder in the layout `raysearch launch` leaves: metadata, per-trial params and results.
    Trial ids as Optuna makes them (8 hex digits) or as Tune's random/grid search does (12345_00001)."""
    space = load_space("demo").with_base([])
    root.mkdir(parents=True)
    (root / "raysearch_experiment.json").write_text(json.dumps({"name": root.name, "space": space.to_dict()}))
    state = {"trial_data": [], "runner_data": {}, "stats": {}}
    for index, (trial_id, params, results, status) in enumerate(trials, start=1):
        d = root / f"run_trial_{trial_id}_{index}_seed=0_2026-11-21_10-00-00"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(params))
        (d / "result.json").write_text("".join(json.dumps(r) + "\n" for r in results))
        if status is None:
            continue  # a trial Tune's saved state does not know
        state["trial_data"].append([json.dumps({"trial_id": trial_id, "status": status}), "{}"])
    (root / "experiment_state-2026-11-21_10-00-00.json").write_text(json.dumps(state))


def _result(step, dev, remaining):
    return {"step": step, "phase": "pruning", "target_dev": dev, "exact_sparsity": 1 - remaining / FULL,
            "remaining_params": remaining, "full_params": FULL}


def test_trial_frame_of_a_partially_finished_experiment(tmp_path):
    params = {"transfer.coupling": "tied", "transfer.groups.embeddings": "on", "transfer.groups.attention": "off",
              "transfer.groups.ffn": "on", "transfer.groups.layernorm": "off", "transfer.groups.masks": "off",
              "transfer.transfer_start_step": 0.25, "pruning.target_sparsity": 0.5}
    _write_experiment(tmp_path / "exp", [  # the demo space: 300 steps
        ("aaaa0001", params, [_result(150, 0.6, 500), _result(300, 0.7, 400)], "TERMINATED"),
        # restarted after step 150: step 150 reported twice, the later report wins
        ("aaaa0002", {**params, "transfer.coupling": "none"}, [_result(150, 0.5, 600), _result(150, 0.55, 590)], "RUNNING"),
        ("c0ffe_00003", {**params, "pruning.target_sparsity": 0.7}, [], "PENDING"),
    ])
    trials = trial_frame(tmp_path / "exp").set_index("trial_id")
    assert trials.loc["aaaa0001", "complete"] and trials.loc["aaaa0001", "target_dev"] == 0.7
    assert trials.loc["aaaa0001", "coupling"] == "tied" and trials.loc["aaaa0001", "group_embeddings"]
    assert trials.loc["aaaa0001", "transfer_start_step"] == 75 and trials.loc["aaaa0001", "max_steps"] == 300
    assert trials.loc["aaaa0002", "coupling"] == "none" and not trials.loc["aaaa0002", "group_embeddings"]
    assert trials.loc["aaaa0002", "target_dev"] == 0.55 and not trials.loc["aaaa0002", "complete"]
    assert trials.loc["aaaa0002", "status"] == "RUNNING" and trials.loc["c0ffe_00003", "status"] == "PENDING"
    assert math.isnan(trials.loc["c0ffe_00003", "target_dev"]) and trials.loc["c0ffe_00003", "trial_index"] == 3
    # a storage URI reads the same (pyarrow file systems: file://, s3://, gs://, ...)
    by_uri = trial_frame(f"file://{tmp_path / 'exp'}").set_index("trial_id")
    assert by_uri["target_dev"].equals(trials["target_dev"]) and list(by_uri["status"]) == list(trials["status"])
    history = history_frame(tmp_path / "exp")
    assert len(history) == 3 and history.groupby("trial_id").size().to_dict() == {"aaaa0001": 2, "aaaa0002": 1}
    # the CLI analyses it too (the unfinished trial is in the frame, left out of the front)
    assert main(["analyze", str(tmp_path / "exp"), "--out", str(tmp_path / "out")]) == 0
    assert set(pd.read_csv(tmp_path / "out" / "front.csv")["trial_id"]) == {"aaaa0001"}


def test_a_trial_folder_left_by_a_killed_driver_is_not_part_of_the_experiment(tmp_path):
    """The driver started a trial and died before Tune saved it; the resumed search ran another in its place. The
    abandoned folder (unknown to the saved state, not written since) is left out; so is one the resumed search rewrote
    at its end but replaced (same params as a known trial, nothing reported); a trial started since the save is not."""
    import os

    done = [_result(150, 0.6, 500), _result(300, 0.7, 400)]
    _write_experiment(tmp_path / "exp", [("aaaa0001", {"s": 1}, done, "TERMINATED"), ("aaaa0002", {"s": 2}, done[:1], None),
                                         ("aaaa0003", {"s": 3}, done, "TERMINATED"), ("aaaa0004", {"s": 4}, [], None),
                                         ("aaaa0005", {"s": 3}, [], None)])
    state = next((tmp_path / "exp").glob("experiment_state-*.json")).stat().st_mtime
    for trial_id, when in (("aaaa0002", state - 60), ("aaaa0004", state + 60), ("aaaa0005", state + 60)):
        folder = next((tmp_path / "exp").glob(f"run_trial_{trial_id}_*"))
        for path in (*folder.iterdir(), folder):
            os.utime(path, (when, when))
    assert list(trial_frame(tmp_path / "exp")["trial_id"]) == ["aaaa0001", "aaaa0003", "aaaa0004"]
    assert set(history_frame(tmp_path / "exp")["trial_id"]) == {"aaaa0001", "aaaa0003"}


def test_a_resumed_trials_history_is_read_whole(tmp_path):
    """A driver resumed after a crash starts Tune's result.json of a trial again empty; raysearch's own history of
    the trial (written by TrialRecorder) still has the evaluations from before the crash."""
    from raysearch.distributed.callbacks import TrialRecorder

    _write_experiment(tmp_path / "exp", [("aaaa0001", {}, [_result(300, 0.7, 400)], "TERMINATED")])
    recorder, trial = TrialRecorder(str(tmp_path / "exp")), type("Trial", (), {"trial_id": "aaaa0001"})()
    for result in (_result(150, 0.6, 500), {"done": False}, _result(300, 0.7, 400)):  # a result without a step is not kept
        recorder.on_trial_result(0, [trial], trial, result)
    assert len((tmp_path / "exp" / "trial_history" / "aaaa0001.jsonl").read_text().splitlines()) == 2
    history = history_frame(tmp_path / "exp")
    assert list(history["step"]) == [150, 300] and list(history["target_dev"]) == [0.6, 0.7]
    assert trial_frame(tmp_path / "exp")["target_dev"].item() == 0.7


def test_resume_of_a_finished_search_says_so_without_starting_ray(tmp_path, capsys):
    import sys

    done = [_result(150, 0.6, 500), _result(300, 0.7, 400)]
    _write_experiment(tmp_path / "exp", [("aaaa0001", {}, done, "TERMINATED"), ("aaaa0002", {}, done, "TERMINATED")])
    meta_file = tmp_path / "exp" / "raysearch_experiment.json"
    meta_file.write_text(json.dumps({**json.loads(meta_file.read_text()), "settings": {"num_samples": 2, "sampler": "tpe"}}))
    assert main(["resume", str(tmp_path / "exp")]) == 0
    assert "is finished: 2 of 2 trials done, nothing to resume" in capsys.readouterr().out
    assert "ray" not in sys.modules or not __import__("ray").is_initialized()


def test_status_says_when_a_search_showing_running_trials_last_wrote_anything(tmp_path, capsys):
    """Tune's state of a search whose driver died still says RUNNING; status says how long ago anything happened."""
    import os
    import time

    _write_experiment(tmp_path / "exp", [("aaaa0002", {"transfer.coupling": "none"}, [_result(150, 0.5, 600)], "RUNNING")])
    an_hour_ago = time.time() - 3600
    for path in (tmp_path / "exp").rglob("*.json"):
        os.utime(path, (an_hour_ago, an_hour_ago))
    assert main(["status", str(tmp_path / "exp")]) == 0
    out = capsys.readouterr().out
    assert "RUNNING" in out and "last activity 60 min ago" in out and f"raysearch resume {tmp_path / 'exp'}" in out


@pytest.mark.parametrize("args, message", [
    (["{missing}"], "no such experiment folder"),
    (["{plain}"], "is not a raysearch experiment"),
    (["{damaged}"], "raysearch_experiment.json: is damaged or incomplete"),
    (["ftp2://host/exp"], "Unrecognized filesystem type"),
    (["{exp}", "--bin-width", "0"], "--bin-width: must be in (0, 1], got 0.0"),
    (["{exp}", "--bin-width", "-0.1"], "--bin-width: must be in (0, 1]"),
    (["{exp}", "--objective", "latency_ms:min"], "objective latency_ms: no finished trial reported a number for it"),
    (["{exp}", "--objective", "wall_clock:min"], "objective wall_clock: no such column"),
    (["{exp}", "--objective", "target_dev"], "--objective: 'target_dev' has no direction"),
    (["{exp}", "{latency}"], "name the objectives with --objective"),
])
def test_bad_analyze_input_is_one_line(tmp_path, capsys, args, message):
    _write_experiment(tmp_path / "exp", [("aaaa0001", {"transfer.coupling": "none", "pruning.target_sparsity": 0.5},
                                          [_result(300, 0.7, 400)], "TERMINATED")])
    (tmp_path / "plain").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "raysearch_experiment.json").write_text('{"name": "cut sho')
    _write_experiment(tmp_path / "latency", [("aaaa0003", {}, [_result(300, 0.7, 400)], "TERMINATED")])
    meta = json.loads((tmp_path / "latency" / "raysearch_experiment.json").read_text())
    meta["space"]["objectives"] = [{"metric": "target_dev", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}]
    (tmp_path / "latency" / "raysearch_experiment.json").write_text(json.dumps(meta))
    args = [a.format(missing=tmp_path / "missing", plain=tmp_path / "plain", exp=tmp_path / "exp", damaged=tmp_path / "damaged",
                     latency=tmp_path / "latency") for a in args]
    assert main(["analyze", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
    if args[0] != str(tmp_path / "exp"):  # status reads the same folders
        assert main(["status", args[0]]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_the_report_states_the_bin_width_it_used():
    result = analyze(_factorial(n=8), objectives=[("target_dev", "max"), ("remaining_params", "min")], width=0.25, n_boot=10)
    assert result.width == 0.25
    assert "bins of width 0.25" in render_markdown(result, {"front": "f.png", "effects": "e.png", "hypervolume": "h.png"})


def test_analysis_of_a_bare_frame_with_a_single_trial(tmp_path):
    """A frame from elsewhere with only the objective columns, and one trial: everything still renders."""
    bare = frame([(0.8, 500)])[["target_dev", "remaining_params", "full_params", "exact_sparsity"]]
    result = analyze(bare, n_boot=10)
    assert result.front["trial_id"].tolist() == ["row0"] and result.hypervolumes == {"unnamed": pytest.approx(0.4)}
    assert result.effects.empty and result.heldout is None
    write_outputs(result, tmp_path / "out")
    assert "not enough variation among the trials to say" in (tmp_path / "out" / "report.md").read_text()


# ------------------------------------------------------------------ the report claims only what the data show


def _groups_frame(ffn_gain: float, noise: float, attention_follows_ffn: bool, n: int = 12, seed: int = 0):
    """Coupled trials in one sparsity bin; the ffn group adds `ffn_gain`; attention either varies on its own or is
    on exactly when ffn is (confounded)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        ffn = i % 2 == 0
        groups = {f"group_{g}": bool(rng.random() < 0.5) for g in GROUPS}
        groups["group_ffn"] = ffn
        groups["group_attention"] = ffn if attention_follows_ffn else i % 4 < 2
        quality = 0.8 + (ffn_gain if ffn else 0.0) + rng.normal(0, noise) if noise else 0.8 + (ffn_gain if ffn else 0.0)
        rows.append({"coupling": "tied", **groups, "transfer_start_fraction": 0.1, "transfer_weight": 1.0, "coupling_strength": np.nan,
                     "target_sparsity": 0.5, "preset": "searched", "seed": 0, "q": quality})
    data = pd.DataFrame(rows)
    return frame([(q, 500) for q in data["q"]], **data.drop(columns=["q"]))


def test_an_interval_that_cannot_vary_is_not_called_clear():
    from analysis.compute import factor_answers
    from analysis.report import answer_lines

    effects = factor_effects(_groups_frame(0.008, noise=0.0, attention_follows_ffn=False), n_boot=200)
    ffn = next(a for a in factor_answers(effects, "what") if a.factor == "group ffn")
    assert ffn.effect == pytest.approx(0.008) and ffn.ci_low == pytest.approx(ffn.ci_high)  # what triggered "clear"
    assert "clear" not in ffn.verdict and "cannot tell" in ffn.verdict
    line = next(line for line in answer_lines(effects, "what", "target_dev") if "group ffn" in line)
    assert "no interval" in line and "+0.008 to +0.008" not in line


def test_confounded_factors_are_named_not_credited():
    from analysis.compute import factor_answers

    effects = factor_effects(_groups_frame(0.05, noise=0.002, attention_follows_ffn=True), n_boot=200)
    answers = {a.factor: a for a in factor_answers(effects, "what")}
    assert "confounded with group attention" in answers["group ffn"].verdict
    assert "confounded with group ffn" in answers["group attention"].verdict
    independent = {a.factor: a for a in factor_answers(factor_effects(_groups_frame(0.05, 0.002, False), n_boot=200), "what")}
    assert independent["group ffn"].verdict == "clear"


def test_a_sparsity_bin_is_shown_as_the_range_it_holds():
    from analysis.report import with_bin_ranges

    per_bin = best_per_sparsity_bin(frame([(0.7, 20), (0.8, 40), (0.9, 500)], seed=[0, 0, 0]), width=0.1)
    shown = with_bin_ranges(per_bin, 0.1)
    assert "0.95-1.00" in set(shown["sparsity"]) and "0.45-0.55" in set(shown["sparsity"])
    assert "sparsity_bin" not in shown and not (shown["sparsity"] == "1.00").any()


def test_the_front_line_claims_no_quality_beyond_what_each_point_reached():
    from analysis.plots import front_steps

    front = pd.DataFrame({"x": [0.8, 0.5, 0.9], "quality": [0.7, 0.9, 0.6]})
    xs, ys = front_steps(front, "max")
    assert max(xs) == 0.9 and ys[xs.index(0.9)] == 0.6  # ends at the sparsest point, with its quality
    for x, y in zip(xs, ys):  # at every sparsity on the line, some front point at least as sparse reaches that quality
        assert any(s >= x and q >= y for s, q in zip(front["x"], front["quality"]))
    assert ys[1] == 0.7 and xs[1] == 0.5  # past 0.5 the line drops to the next point's quality at once
    # on remaining parameters (fewer is better) the same front, mirrored: the line ends at the fewest parameters
    params = front.assign(x=(1 - front["x"]) * 1000)
    xs, ys = front_steps(params, "min")
    assert min(xs) == pytest.approx(100) and ys[xs.index(min(xs))] == 0.6
    for x, y in zip(xs, ys):
        assert any(p <= x + 1e-9 and q >= y for p, q in zip(params["x"], params["quality"]))


def test_the_front_is_drawn_on_the_axis_it_was_computed_on_and_each_experiment_shows_its_own():
    from analysis.pareto import front_plot_frame

    a = frame([(0.90, 500), (0.80, 400)], experiment="a")
    b = frame([(0.70, 300), (0.60, 600)], experiment="b")  # everything b has is dominated by a's points but one
    points = front_plot_frame(pd.concat([a, b], ignore_index=True))
    assert (points["x"] == pd.concat([a, b], ignore_index=True)["remaining_params"]).all()  # the computed axis
    own = points.groupby("experiment")["own_rank"].apply(lambda r: int((r == 0).sum()))
    assert own["a"] == 2 and own["b"] == 1  # b's own front is drawn even where a dominates it


def test_the_effects_plot_draws_no_empty_rows(tmp_path):
    from analysis.plots import effect_bars, plot_effects

    effects = factor_effects(_groups_frame(0.05, 0.002, False), n_boot=50)
    with_empty = pd.concat([effects, effects.iloc[:1].assign(level="never matched", effect=np.nan, ci_low=np.nan, ci_high=np.nan)])
    bars = effect_bars(with_empty)
    assert len(bars) == len(effects) and bars["effect"].notna().all() and "never matched" not in " ".join(bars["label"])
    assert plot_effects(with_empty, tmp_path / "effects.png").stat().st_size > 0


def test_a_duplicate_trial_counts_once_in_the_effects():
    # The uncoupled configuration was sampled three times; the search trained it once and the two copies
    # re-reported its results (duplicate_of). Counted three times, it would drag every other level's "rest" to it.
    f = frame([(0.70, 400), (0.70, 400), (0.70, 400), (0.72, 400), (0.74, 400), (0.71, 400)],
              preset="searched", coupling=["none", "none", "none", "tied", "tied", "soft"])
    f["duplicate_of"] = [None, "t0", "t0", None, None, None]
    effects = factor_effects(f, n_boot=50).set_index(["factor", "level"])
    none, tied = effects.loc[("coupling mode", "none")], effects.loc[("coupling mode", "tied")]
    assert (none["trials"], none["others"]) == (1, 3)
    assert tied["effect"] == pytest.approx(0.73 - (0.70 + 0.71) / 2)  # 0.0275 if the copies counted
    assert (tied["trials"], tied["others"]) == (2, 2)


def _aliased_in_one_bin_frame(aliased: bool, seed: int = 0):
    """The demo's case: at sparsity 0.5 masks stays off while ffn and layernorm vary on their own; at 0.9 masks varies,
    and (when `aliased`) masks on is exactly ffn off and layernorm off. The ffn group adds 0.05."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(16):
        high = i >= 8
        ffn = i % 2 == 0
        masks = (not ffn) if (high and aliased) else (high and i % 4 < 2)
        layernorm = (not masks) if (high and aliased) else i % 4 in (0, 3)
        groups = {"group_embeddings": True, "group_attention": bool(rng.random() < 0.5), "group_ffn": ffn,
                  "group_layernorm": layernorm, "group_masks": masks}
        rows.append({"coupling": "tied", **groups, "transfer_start_fraction": 0.1, "transfer_weight": 1.0, "coupling_strength": np.nan,
                     "target_sparsity": 0.9 if high else 0.5, "preset": "searched", "seed": 0,
                     "q": 0.8 + 0.05 * ffn + rng.normal(0, 0.002), "s": 0.9 if high else 0.5})
    data = pd.DataFrame(rows)
    return frame([(q, 1000 * (1 - s)) for q, s in zip(data["q"], data["s"])], **data.drop(columns=["q", "s"]))


@pytest.mark.parametrize("aliased", [True, False])
def test_confounding_is_checked_on_the_trials_an_effect_is_computed_from(aliased, tmp_path):
    from analysis.compute import factor_answers
    from analysis.plots import effect_bars

    effects = factor_effects(_aliased_in_one_bin_frame(aliased), n_boot=200)
    masks = {a.factor: a for a in factor_answers(effects, "what")}["group masks"]
    if aliased:  # its effect rests on the 0.9 bin alone, where it is ffn's and layernorm's too: credited to none
        assert "confounded with group ffn, group layernorm" in masks.verdict and "clear" not in masks.verdict
        assert effect_bars(effects)["confounded"].any()
    else:
        assert "confounded" not in masks.verdict


def test_a_nan_or_text_objective_is_said_as_such(tmp_path):
    from analysis.report import render_markdown

    f = frame([(0.9, 500), (0.8, 300), (0.7, 200)], trial_id=["ok1", "ok2", "diverged"], complete=True)
    f.loc[2, "target_dev"] = float("nan")
    result = analyze(f, n_boot=50)
    assert "diverged" not in set(result.front["trial_id"]) and result.unscored == ["diverged"]
    assert "with no number (NaN) for an objective: diverged" in render_markdown(result, {"front": "f", "effects": "e", "hypervolume": "h"})
    words = f.assign(target_dev=["high", "low", "mid"])
    with pytest.raises(UserInputError, match="target_dev: is not numeric .*'high'"):
        analyze(words, n_boot=50)
    with pytest.raises(UserInputError, match="no finished trial reported a number for it"):
        analyze(f.assign(target_dev=float("nan")), n_boot=50)
