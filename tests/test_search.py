"""Distributed search on a real local Ray cluster (`ray start --head` on 127.0.0.1, 2 CPUs).

One cluster serves the module; it is stopped at the end. Trials use the tiny `demo` space
shortened to a few steps.
"""
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest

from analysis import history_frame, trial_frame
from raysearch.cli import main
from raysearch.distributed.status import trial_table
from search_spaces import load_space

from .conftest import SHARED_DATA

SHORT = ["--set", f"target.source={SHARED_DATA / 'RTE'}", "--set", f"transfer.task.source={SHARED_DATA / 'RTE'}",
         "--set", "max_steps=20", "--set", "eval_every=10", "--set", "pruning.warmup_steps=10", "--set", "pruning.finetune_steps=4"]
# one seed per configuration, no baselines, no confirmation: what the tests of other behaviour need (test_pick_launch below
# and tests/test_pick.py cover the stages)
FAST = [*SHORT, "--repeats", "1", "--no-baselines", "--confirm-seeds", "0"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str):
    """Stop the Ray processes of the cluster whose session lives in TEMP_DIR, and only those.

    `ray stop` stops every Ray on the machine, a user's own included. The head's daemons name their session
    folder on the command line; the workers are their descendants.
    """
    import psutil  # a dependency of ray

    heads = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in arg for arg in p.info["cmdline"] or [])]
    procs = {p.pid: p for head in heads for p in [head, *_children(head)]}.values()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _children(process):
    import psutil

    try:
        return process.children(recursive=True)
    except psutil.Error:
        return []


def _start_head(temp_dir: str, agent_port: int | None = None) -> tuple[int, int]:
    """`ray start --head` on ports of our own (the dashboard agent's on `agent_port` where given); returns (GCS port,
    dashboard port)."""
    ports = set()
    while len(ports) < 6:
        ports.add(_free_port())
    port, dashboard_port, *agent_ports = ports
    agent_ports[0] = agent_port or agent_ports[0]
    # the agents' default ports (e.g. 52365) are taken when another Ray runs on the machine, and then the head
    # has no job agent ("No available agent to submit job"); so every port is one of ours
    agent_flags = [f"--{flag}={p}" for flag, p in zip(
        ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"), agent_ports)]
    env = {**os.environ, "RAY_TRAIN_V2_ENABLED": "1"}
    subprocess.run(["ray", "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port), "--disable-usage-stats",
                    "--temp-dir", temp_dir, *agent_flags], check=True, capture_output=True, text=True, env=env)
    return port, dashboard_port


@pytest.fixture(scope="module")
def cluster():
    """A 2-CPU Ray head on 127.0.0.1 with its dashboard (jobs), in a session folder of its own; stopped afterwards."""
    # short: Ray's socket paths under it must stay within the 107 characters a unix socket allows
    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    try:
        for attempt in range(3):
            try:
                port, dashboard_port = _start_head(temp_dir)
                break
            except subprocess.CalledProcessError as error:
                # a port found free can be taken before Ray binds it (seen once in CI: the dashboard agent could not bind
                # its gRPC port); a failed start leaves daemons behind, so stop them first
                _stop_cluster(temp_dir)
                if attempt == 2:
                    raise RuntimeError(f"ray start failed 3 times; last output:\n{error.stdout[-2000:]}\n{error.stderr[-2000:]}") from error
        yield {"address": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dashboard_port}"}
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_head_whose_job_agent_cannot_bind_its_port_is_reported_in_one_line(tmp_path, capsys):
    """Another program holds the port the head's dashboard agent is given: the agent runs without its job service and
    the head answers "No available agent". `launch --submit` says so in one line naming the port's option, at once
    rather than after AGENT_WAIT_S (120 s)."""
    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        try:
            _, dashboard_port = _start_head(temp_dir, agent_port=holder.getsockname()[1])
            started = time.monotonic()
            code = main(["launch", "demo", "--submit", "--dashboard", f"http://127.0.0.1:{dashboard_port}",
                         "--storage-path", str(tmp_path / "exp"), "--name", "blocked", *FAST])
            seconds = time.monotonic() - started
        finally:
            _stop_cluster(temp_dir)
            shutil.rmtree(temp_dir, ignore_errors=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and seconds < 60, seconds
    assert len(err) == 1 and "could not bind its port" in err[0] and "--dashboard-agent-listen-port" in err[0], err


def _experiment(tmp_path, name):
    return tmp_path / "exp" / name


def test_four_trial_search_on_two_cpus(cluster, tmp_path, capsys, monkeypatch):
    db = f"sqlite:///{tmp_path / 'study.db'}"
    mlruns = f"sqlite:///{tmp_path / 'mlflow.db'}"  # the trackers in their local/offline modes (MLflow 3: a database file)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlruns)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_runs"))
    (tmp_path / "wandb_runs").mkdir()
    code = main(["launch", "demo", "--address", cluster["address"], "--num-samples", "4", "--storage-path", str(tmp_path / "exp"),
                 "--name", "four", "--optuna-storage", db, *FAST, "--set", "target.heldout_test_size=64",
                 "--callback", "mlflow", "--callback", "wandb"])
    assert code == 0
    out = capsys.readouterr().out
    assert "4/4 trials done" in out and "Configuration for experiment" not in out and "View detailed results" not in out
    frame = trial_table(str(_experiment(tmp_path, "four")))
    assert len(frame) == 4 and set(frame["status"]) == {"TERMINATED"}
    assert frame["target_dev"].notna().all() and frame["remaining_params"].notna().all()
    assert (frame["step"] == 20).all()
    study = optuna.load_study(study_name="four", storage=db)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4 and all(len(t.values) == 2 for t in complete)
    _the_trackers_saw_every_trial(mlruns, tmp_path / "wandb_runs", frame)
    space = load_space("demo")
    allowed = {p.path: p for p in space.params}
    for _, row in frame.iterrows():
        config = {k.removeprefix("param/"): v for k, v in row.items() if k.startswith("param/") and v == v}
        assert config  # the sampled values are in the frame
        for key, value in config.items():
            base_key = key if key in allowed else key.rsplit(".", 1)[0]
            param = allowed[base_key]  # every sampled key belongs to the space
            if param.kind == "categorical":
                assert value in param.choices
            elif param.kind == "subset":
                assert value in ("on", "off")
            else:
                assert param.low <= value <= param.high

    # each trial stored the validated config it ran with, and the analysis reads that file, not the space
    experiment = _experiment(tmp_path, "four")
    for _, row in frame.iterrows():
        stored = json.loads((experiment / "trial_configs" / f"{row['trial_id']}.json").read_text())
        assert stored["target"]["heldout_test_size"] == 64 and stored["seed"] == row["seed"]
    edited = experiment / "trial_configs" / f"{frame['trial_id'].iloc[0]}.json"
    edited.write_text(json.dumps({**json.loads(edited.read_text()), "learning_rate": 0.123}))
    assert trial_frame([str(experiment)]).set_index("trial_id").loc[frame["trial_id"].iloc[0], "learning_rate"] == 0.123

    # the real experiment analyses into every output file, with the held-out test split reported
    out = tmp_path / "analysis"
    assert main(["analyze", str(_experiment(tmp_path, "four")), "--out", str(out)]) == 0
    for name in ("trials.parquet", "trials.csv", "history.parquet", "history.csv", "front.csv", "effects.csv",
                 "hypervolume_history.csv", "front.png", "effects.png", "hypervolume.png", "report.md"):
        assert (out / name).stat().st_size > 0, name
    report = (out / "report.md").read_text()
    assert "## Pareto front (selected on dev)" in report and "Test minus dev over the dev-selected front" in report
    assert frame["target_test"].notna().all()
    assert "| exported model |" in report and "models/" in report  # the front names where each model is
    _every_trial_left_a_model(experiment, frame, tmp_path)


def _the_trackers_saw_every_trial(mlruns: str, wandb_dir: Path, frame):
    """MLflow (a local file store): a run per trial with its sampled config, its metrics at each evaluation and its
    model's folder; W&B (offline): a run per trial."""
    import mlflow

    from raysearch.distributed.trackers import EXPORT_TAG

    client = mlflow.MlflowClient(tracking_uri=mlruns)
    runs = client.search_runs([client.get_experiment_by_name("four").experiment_id])
    assert len(runs) == 4
    assert {run.data.tags[EXPORT_TAG] for run in runs} == set(frame["export_dir"])
    for run in runs:
        assert "pruning.target_sparsity" in run.data.params and run.data.tags.get("trial_name")
        evaluated = [m.value for m in client.get_metric_history(run.info.run_id, "step")]
        assert evaluated[:2] == [10, 20] and len(client.get_metric_history(run.info.run_id, "target_dev")) >= 2
    assert len(list(wandb_dir.glob("wandb/offline-run-*"))) == 4


def _every_trial_left_a_model(experiment: Path, frame, tmp_path: Path):
    """Each finished trial exported its model into the experiment (loadable with the Auto classes, its export check in
    its results), its checkpoints are gone, and `raysearch export` copies the front's models with a card each."""
    import raysearch.hf  # noqa: F401
    from transformers import AutoModelForSequenceClassification

    for trial_id in frame["trial_id"]:
        model_dir = experiment / "models" / trial_id
        card = json.loads((model_dir / "export.json").read_text())
        assert card["export_dev_agreement"] > 0.95 and card["export_max_logit_diff"] < 1e-3
        assert AutoModelForSequenceClassification.from_pretrained(model_dir).num_parameters() == card["export_parameters"]
        assert not list((experiment / "train_runs" / f"trial_{trial_id}").glob("checkpoint_*"))  # disk: no checkpoint kept
    assert frame["export_dir"].notna().all()
    out = tmp_path / "shipped"
    assert main(["export", str(experiment), "--out", str(out), "--onnx"]) == 0
    shipped = sorted(p.name for p in out.iterdir())
    assert shipped and set(shipped) <= set(frame["trial_id"])
    for trial_id in shipped:
        card = json.loads((out / trial_id / "card.json").read_text())
        assert card["parameters"] > card["encoder_prunable_parameters"] > 0 and card["bytes_on_disk"] > 0
        assert card["config"]["seed"] == int(frame.set_index("trial_id").loc[trial_id, "seed"])
        assert (out / trial_id / "model.onnx").is_file() and card["onnx_max_logit_diff"] < 1e-4
        latency = card["cpu_latency"]  # median and spread, also in the model card
        assert latency["passes"] == 30 and latency["min_ms"] <= latency["p25_ms"] <= latency["median_ms"] <= latency["p75_ms"] <= latency["max_ms"]
        assert f"median {latency['median_ms']:.2f} ms" in (out / trial_id / "README.md").read_text()
    assert main(["export", str(experiment), "--out", str(out)]) == 2  # never over what is there


def test_latency_as_a_search_objective(cluster, tmp_path):
    """A space may minimise the exported model's latency instead of its parameters: every evaluation measures it,
    Optuna and the progress lines get it, and the analysis builds its fronts on it."""
    import yaml

    space = load_space("demo").to_dict()
    space["objectives"] = [{"metric": "target_dev", "mode": "max"}, {"metric": "latency_ms", "mode": "min"}]
    path = tmp_path / "latency.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in space.items() if k in ("description", "base", "objectives", "parameters")}))
    code = main(["launch", str(path), "--address", cluster["address"], "--num-samples", "1", "--storage-path", str(tmp_path / "exp"),
                 "--name", "latency", *FAST, "--set", "latency.repeats=3"])
    assert code == 0
    history = history_frame(str(_experiment(tmp_path, "latency")))
    assert (history["latency_ms"] > 0).all()  # measured at every evaluation
    report = (_experiment(tmp_path, "latency") / "analysis" / "report.md").read_text()
    assert "latency_ms" in report and "## Pareto front (selected on dev)" in report


def test_the_grid_generator_is_held_to_the_clusters_concurrency_and_runs_each_combination_on_each_seed(cluster):
    """Tune does not apply max_concurrent_trials to a generator passed in (the staged search's samplers, random
    included, go through Optuna and tests/test_pick.py)."""
    import ray

    from raysearch.distributed.search import _search
    from raysearch.distributed.settings import SearchSettings

    ray.init(address=cluster["address"])
    try:
        generator, param_space, total = _search(load_space("baselines"), SearchSettings(sampler="grid"), "grid")
        assert generator.max_concurrent == 2 and total == 3 * 2 * 3  # presets x sparsities, on each of 3 seeds
        assert param_space["__seed__"] == {"grid_search": [0, 1, 2]}
    finally:
        ray.shutdown()


def test_a_twin_counts_as_finished_only_once_its_model_is_exported(tmp_path):
    """Between a trial's final evaluation and its export report, a duplicate must not reuse it: it would hand on
    results without a model."""
    from raysearch.experiment import Folder, finished_twin, trial_config_file, trial_history_file

    folder, config = Folder(str(tmp_path)), {"max_steps": 20, "seed": 0}
    folder.write_text(trial_config_file("twin"), json.dumps(config))
    folder.write_text(trial_config_file("other"), json.dumps({**config, "seed": 1}))
    evaluations = [{"step": 10, "target_dev": 0.6}, {"step": 20, "target_dev": 0.7}]
    for trial in ("twin", "other"):
        folder.write_text(trial_history_file(trial), "".join(json.dumps(e) + "\n" for e in evaluations))
    assert finished_twin(folder, "new", config) is None  # evaluated to the end, not yet exported
    folder.append_text(trial_history_file("twin"), json.dumps({"step": 20, "target_dev": 0.7, "export_dir": "models/twin"}) + "\n")
    folder.append_text(trial_history_file("other"), json.dumps({"step": 20, "target_dev": 0.7, "export_dir": "models/other"}) + "\n")
    assert finished_twin(folder, "new", config) == "twin"  # and never the trial with another config
    assert finished_twin(folder, "twin", config) is None  # nor the trial itself


def _one_configuration_space(tmp_path) -> Path:
    import yaml

    space = load_space("demo").to_dict()
    space["parameters"] = {"pruning.target_sparsity": {"choices": [0.5]}}
    path = tmp_path / "one.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in space.items() if k in ("description", "base", "parameters")}))
    return path


def test_a_configuration_trained_before_is_not_trained_again(cluster, tmp_path):
    """A space of one configuration, three trials, two at a time: the first two train at once and reach the same
    result (training on a CPU is deterministic, which the reuse relies on); the third finds them finished and reports
    a twin's results without training, so it has no model of its own and points at the twin's."""
    code = main(["launch", str(_one_configuration_space(tmp_path)), "--address", cluster["address"], "--num-samples", "3", "--sampler", "random",
                 "--storage-path", str(tmp_path / "exp"), "--name", "twins", *FAST])
    assert code == 0
    experiment = _experiment(tmp_path, "twins")
    frame = trial_frame([str(experiment)]).set_index("trial_id")
    assert len(frame) == 3 and frame["complete"].all()
    trained, replayed = frame[frame["duplicate_of"].isna()], frame[frame["duplicate_of"].notna()]
    assert len(trained) == 2 and len(replayed) == 1
    assert trained["target_dev"].nunique() == 1 and trained["remaining_params"].nunique() == 1
    twin, copy = replayed["duplicate_of"].iloc[0], replayed.iloc[0]
    assert twin in trained.index
    for column in ("target_dev", "target_test", "remaining_params", "exact_sparsity", "export_dir"):
        assert copy[column] == trained.loc[twin, column], column
    assert not (experiment / "models" / replayed.index[0]).exists() and (experiment / "models" / twin).is_dir()
    steps = history_frame([str(experiment)]).groupby("trial_id")["step"].apply(list)
    assert steps[replayed.index[0]] == steps[twin] == [10, 20]


@pytest.mark.parametrize("workers", [1, 2])
def test_trials_finish_and_a_killed_worker_resumes_to_the_same_result(cluster, tmp_path, capsys, kill_worker_after, workers):
    """1 worker: the trial trains in Tune's trial process, which Tune reuses for the next trial; 2 workers: data
    parallel (gloo on CPU), each rank reporting as often as rank 0. A search of two such trials, run side by side,
    finishes; a trial whose last worker is SIGKILLed after its step-10 checkpoint restarts from it (Tune restarts a
    1-worker trial, Ray Train a 2-worker trial's workers) and ends where the unkilled trials end (in a local Ray: the
    hook reaches its workers)."""
    space = _one_configuration_space(tmp_path)
    flags = ["--workers-per-trial", str(workers), "--cpus-per-worker", "0.5", "--storage-path", str(tmp_path / "exp"), *FAST,
             "--set", "target.heldout_test_size=64"]
    assert main(["launch", str(space), "--num-samples", "2", "--sampler", "random", "--rerun-duplicates", "--name", "runs",
                 "--address", cluster["address"], *flags]) == 0
    kill_worker_after(13)
    assert main(["launch", str(space), "--num-samples", "1", "--name", "killed", "--verbose", *flags]) == 0
    out = capsys.readouterr().out
    assert "restarted: it continues from its step-10 checkpoint" in out  # one line, not Ray's trace
    assert "Configuration for experiment" in out  # --verbose: Tune's own lines too
    results = list(_experiment(tmp_path, "killed").glob("*/result.json"))
    reports = [json.loads(line) for line in results[0].read_text().splitlines()]
    # the restarted trial continued from the step-10 checkpoint, not from scratch (the last report adds the export check)
    assert [r["step"] for r in reports if "export_dir" not in r] == [10, 20] and "export_dir" in reports[-1]
    frame = trial_frame([str(_experiment(tmp_path, "runs")), str(_experiment(tmp_path, "killed"))])
    assert len(frame) == 3 and frame["complete"].all() and frame["duplicate_of"].isna().all()
    # measured: the three runs agree to the last digit on a CPU; the tolerance leaves room for gloo's summation order
    for column in ("target_dev", "target_test", "remaining_params", "exact_sparsity", "train_loss"):
        assert frame[column].max() - frame[column].min() <= 1e-4 * max(1.0, abs(frame[column].max())), column
    for experiment in ("runs", "killed"):
        history = history_frame(str(_experiment(tmp_path, experiment)))
        assert set(history.groupby("trial_id")["step"].apply(tuple)) == {(10, 20)}
        assert not list((_experiment(tmp_path, experiment) / "train_runs").glob("*/checkpoint_*"))  # finished: none kept


def test_a_failed_trial_fails_the_launch_and_only_a_resumable_failure_is_called_resumable(tmp_path, capsys, kill_worker_after):
    """Two trials of a grid. max_steps 20: the worker dies at step 5 on every attempt (no checkpoint before step 10 to
    continue from), so the trial exhausts its restarts and `resume` may retry it. max_steps 12: valid as a value, but
    with the base's 10 warm-up and 4 fine-tuning steps the combination is invalid, so it is reported with its fix in
    one line and never as resumable. Launch exits non-zero; both errors are kept; neither trial is on a front."""
    import yaml

    space = load_space("demo").to_dict()
    space["parameters"] = {"max_steps": {"choices": [20, 12]}}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in space.items() if k in ("description", "base", "parameters")}))
    kill_worker_after(5)  # a local Ray (no --address): the hook reaches its workers
    code = main(["launch", str(path), "--sampler", "grid", "--storage-path", str(tmp_path / "exp"),
                 "--name", "broken", "--max-failures", "1", *FAST])
    captured = capsys.readouterr()
    assert code == 1
    frame = trial_table(str(_experiment(tmp_path, "broken"))).set_index("param/max_steps")
    dies, invalid = frame.loc[20, "trial_id"], frame.loc[12, "trial_id"]
    assert (frame["status"] == "ERROR").all() and frame["error"].map(bool).all()
    assert (_experiment(tmp_path, "broken") / "trial_errors" / f"{dies}.txt").stat().st_size > 0
    assert f"1 trial(s) failed: {dies}; their errors are in" in captured.err  # resumable
    problem = "pruning.warmup_steps: 10 is beyond the 8 pruning steps"
    assert f"1 trial(s) failed on their configuration: {invalid} (the trial's configuration is invalid: {problem}" in captured.err
    assert f"[raysearch] trial {invalid} failed: the trial's configuration is invalid: {problem}" in captured.out
    assert f"trial {invalid} failed; it is retried" not in captured.out
    assert f"trial {dies} failed: " in captured.out  # the table says why
    assert "no analysis: experiments: no trial has finished" in captured.out  # nothing unfinished on a front


def _wait_for(predicate, timeout, what, poll=1.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def _kept_trials(path: Path) -> int:
    """Trials in the last good copy of Tune's state that the driver keeps (0 while there is none, or while it is
    being replaced)."""
    with contextlib.suppress(ValueError, OSError, StopIteration):
        return len(json.loads(next((path / "saved_state_good").glob("experiment_state-*.json")).read_text())["trial_data"])
    return 0


def test_driver_killed_in_the_confirmation_stage_then_resume(cluster, tmp_path, monkeypatch, capsys):
    """A staged search on one sparsity level (3 baselines, 1 searched configuration, then the confirmation of it, the
    best baseline and no_transfer on a fresh seed) whose driver is killed once the confirmation has begun: the resume
    enqueues no baseline again and re-trains no finished seed, and ends with the verdict. Also the full disk of
    docs/RELIABILITY.md: the driver died while writing Tune's state and left the searcher's state empty; the resume goes
    back to the copy of the state the driver kept while it was whole."""
    import yaml

    space = load_space("demo").to_dict()
    space["parameters"]["pruning.target_sparsity"] = {"choices": [0.5]}
    space_file = tmp_path / "one_level.yaml"
    space_file.write_text(yaml.safe_dump({k: v for k, v in space.items() if k in ("description", "base", "parameters")}))
    path = _experiment(tmp_path, "crash")
    driver = subprocess.Popen([sys.executable, "-m", "raysearch.cli", "launch", str(space_file), "--address", cluster["address"],
                               "--num-samples", "1", "--repeats", "1", "--confirm-top", "1", "--confirm-seeds", "1",
                               "--storage-path", str(tmp_path / "exp"), "--name", "crash", *SHORT, "--set", "target.heldout_test_size=64"],
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"})
    try:
        # the confirmation starts when the 3 baselines and the searched configuration have ended; a trial takes
        # seconds, Tune saves its state every second here and the driver keeps a copy within a second of that
        _wait_for(lambda: _kept_trials(path) >= 5, 400, "the confirmation stage in the kept state", poll=0.2)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    good = sorted(p.name for p in (path / "saved_state_good").iterdir())
    assert [n.split("-")[0] for n in good] == ["experiment_state", "search_gen_state", "searcher"]
    searcher_state = next(path.glob("searcher-state-*.pkl"))
    searcher_state.write_bytes(b"")  # what a full disk left behind
    monkeypatch.chdir(path.parent)  # a relative experiment path, as users type it
    capsys.readouterr()
    assert main(["resume", path.name, "--address", cluster["address"]]) == 0
    captured = capsys.readouterr()
    assert f"{searcher_state.name} was empty; resuming from the last good copy" in captured.err
    frame = trial_table(str(path))
    assert set(frame["status"]) == {"TERMINATED"} and frame["trial_id"].is_unique
    trials = trial_frame([str(path)])
    stages = trials["stage"].value_counts().to_dict()
    assert stages["baseline"] == 3 and stages["search"] == 1 and stages["confirm"] in (2, 3)  # the best baseline may be no_transfer
    assert not trials.duplicated(["configuration", "seed"]).any()  # no seed of a configuration trained twice
    assert set(trials.loc[trials["stage"] == "confirm", "seed"]) == {1}
    # the progress counter counts the trials finished before the driver died, which the resumed driver never saw end
    assert [line.split(";")[0] for line in captured.out.splitlines() if "trials done;" in line][-1] == f"[raysearch] {len(frame)}/7 trials done"
    verdict = [line for line in captured.out.splitlines() if line.startswith("verdict: ")]
    assert len(verdict) == 1 and ("Transfer helps this pair" in verdict[0] or "Transfer does not help this pair" in verdict[0])
    assert captured.out.rstrip().splitlines()[-1].startswith("  pick: ") and " model " in captured.out.rstrip().splitlines()[-1]
    report = (path / "analysis" / "report.md").read_text()
    assert report.index("## Verdict: the pick") < report.index("## Pareto front")
    assert (path / "damaged_state").is_dir()
    assert main(["status", path.name]) == 0
    # every trial's evaluations are all there, also those from before the driver died (Tune's result.json of a
    # trial that continued from a checkpoint holds only what came after)
    history = history_frame(str(path))
    assert history.groupby("trial_id")["step"].apply(sorted).map(tuple).to_dict() == dict.fromkeys(frame["trial_id"], (10, 20))
    # the models of a resumed experiment export too
    assert main(["export", path.name, frame["trial_id"].iloc[0], "--out", str(tmp_path / "shipped")]) == 0
    assert (tmp_path / "shipped" / frame["trial_id"].iloc[0] / "card.json").is_file()


def test_a_submitted_search_can_be_followed_stopped_and_resumed_as_a_job(cluster, tmp_path, capsys):
    """Against a real `ray start` cluster with token auth: `status` right after `launch --submit` says the job has not
    written its experiment yet; after `ray job stop` no trial is shown RUNNING and the line says how to resume;
    `resume --submit` runs as a job with the original's metadata; `jobs` lists the searches; `resume --job` finds one."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    path = _experiment(tmp_path, "job")
    code = main(["launch", "demo", "--submit", "--dashboard", cluster["dashboard"], "--num-samples", "2",
                 "--storage-path", str(tmp_path / "exp"), "--name", "job", *FAST])
    assert code == 0
    out = capsys.readouterr().out
    job_id = out.split("submitted job ")[1].split(";")[0]
    assert main(["status", str(path)]) == 0
    assert f"job {job_id} is " in (line := capsys.readouterr().out) and "has not written its experiment" in line, line
    client = JobSubmissionClient(cluster["dashboard"])
    metadata = client.get_job_info(job_id).metadata
    assert metadata["raysearch_experiment"] == "job" and metadata["raysearch_experiment_path"] == str(path)
    # stopped once a trial has started and Tune has saved its state
    _wait_for(lambda: list(path.glob("trial_configs/*.json")) and list(path.glob("experiment_state-*.json")), 240, "a started trial")
    client.stop_job(job_id)
    _wait_for(lambda: client.get_job_status(job_id) in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED), 120, "the stop")
    assert client.get_job_status(job_id) == JobStatus.STOPPED
    assert main(["status", "--job", job_id, "--dashboard", cluster["dashboard"]]) == 0
    out = capsys.readouterr().out
    assert " RUNNING " not in out and f"the search's job {job_id} is STOPPED: nothing is running" in out and "resume" in out
    # resumed as a job that carries the same raysearch metadata
    assert main(["resume", str(path), "--submit", "--dashboard", cluster["dashboard"]]) == 0
    resumed = capsys.readouterr().out.split("submitted job ")[1].split(" ")[0]
    _wait_for(lambda: client.get_job_status(resumed) in (JobStatus.SUCCEEDED, JobStatus.FAILED), 300, "the resumed job")
    assert client.get_job_status(resumed) == JobStatus.SUCCEEDED, client.get_job_logs(resumed)[-2000:]
    info = client.get_job_info(resumed)
    assert info.metadata["raysearch_experiment"] == "job" and info.metadata["raysearch_resumes"] == job_id
    assert "raysearch resume" in info.entrypoint
    frame = trial_table(str(path))
    assert len(frame) == 2 and set(frame["status"]) == {"TERMINATED"}
    assert main(["status", str(path)]) == 0
    assert f"job {resumed}: SUCCEEDED" in capsys.readouterr().out
    # the dashboard's jobs are listed with their experiments, so a search can be resumed by the id shown
    assert main(["jobs", "--dashboard", cluster["dashboard"]]) == 0
    listed = next(line for line in capsys.readouterr().out.splitlines() if resumed in line)
    assert "SUCCEEDED" in listed and "2/2" in listed and str(path) in listed
    assert main(["resume", "--job", resumed, "--dashboard", cluster["dashboard"], "--address", cluster["address"]]) == 0
    out = capsys.readouterr().out
    assert f"experiment {path}" in out and "is finished: 2 of 2 trials done" in out


def test_local_means_a_new_local_ray_and_a_dead_address_fails_at_once(tmp_path, monkeypatch, capsys):
    """A stale `ray_current_cluster` record (an earlier `ray start` on the machine) must not capture a launch without
    --address; --address that nothing answers at, or auto with that record, fails in one line within seconds."""
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths live under it
    try:
        (Path(ray_tmp) / "ray").mkdir()
        (Path(ray_tmp) / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_free_port()}")  # nothing listens there
        monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
        for address in (f"127.0.0.1:{_free_port()}", "auto"):
            started = time.monotonic()
            assert main(["launch", "demo", "--address", address, "--storage-path", str(tmp_path / "exp"), "--name", "dead"]) == 2
            assert time.monotonic() - started < 15
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("raysearch: error: --address: nothing answers at"), err
        assert main(["launch", "demo", "--num-samples", "1", "--storage-path", str(tmp_path / "exp"), "--name", "local", *FAST]) == 0
        assert "1/1 trials done" in capsys.readouterr().out
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_invalid_space_fails_before_any_trial(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {target: {source: x}}\nparameters:\n  transfer.groups: {subset_of: [ffnn]}\n")
    assert main(["launch", str(bad), "--storage-path", str(tmp_path / "exp"), "--name", "bad"]) == 2
    assert "transfer.groups.subset_of: unknown group 'ffnn'" in capsys.readouterr().err
    assert not (tmp_path / "exp").exists()


@pytest.mark.parametrize("num_samples, startup_trials, expected", [(12, None, 4), (16, None, 4), (32, None, 8), (64, None, 10),
                                                                   (32, 2, 2)])
def test_tpe_gets_a_quarter_of_the_budget_as_random_start_up_trials_unless_told(num_samples, startup_trials, expected):
    from raysearch.distributed.search import optuna_sampler

    sampler = optuna_sampler("tpe", 0, num_samples, startup_trials=startup_trials)
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == expected


def _two_configuration_searcher():
    """A DistinctOptunaSearch over the demo space cut to one parameter of two values: two configurations in all."""
    from raysearch.distributed.distinct import DistinctOptunaSearch
    from search_spaces import space_from_dict

    space = load_space("demo").to_dict()
    space["parameters"] = {"pruning.target_sparsity": {"choices": [0.5, 0.7]}}
    return DistinctOptunaSearch(space=space_from_dict(space).define_by_run(), metric=["target_dev", "remaining_params"],
                                mode=["max", "min"], sampler=optuna.samplers.RandomSampler(seed=0), space_dict=space)


RESULTS_BY_SPARSITY = {0.5: {"target_dev": 0.8, "remaining_params": 500}, 0.7: {"target_dev": 0.7, "remaining_params": 300}}


def test_a_proposal_of_a_finished_configuration_is_told_its_results_and_drawn_again():
    """Driven as Tune drives a searcher. The second trial gets the configuration the first did not run: a proposal
    of the finished one is told its results (a finished Optuna trial with its values) and drawn again. Once both have
    finished, a third trial is drawn MAX_REDRAWS + 1 times and keeps a finished configuration (and replays its twin),
    so a search larger than its space still ends."""
    from raysearch.distributed.distinct import MAX_REDRAWS

    searcher = _two_configuration_searcher()
    first = searcher.suggest("t0")["pruning.target_sparsity"]
    searcher.on_trial_complete("t0", result=RESULTS_BY_SPARSITY[first])
    second = searcher.suggest("t1")["pruning.target_sparsity"]
    assert {first, second} == {0.5, 0.7}
    searcher.on_trial_complete("t1", result=RESULTS_BY_SPARSITY[second])
    redrawn_before = searcher.redrawn
    assert searcher.suggest("t2")["pruning.target_sparsity"] in (0.5, 0.7)
    assert searcher.redrawn - redrawn_before == MAX_REDRAWS
    told = [t for t in searcher._ot_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(told) == 2 + searcher.redrawn
    for trial in told:
        expected = RESULTS_BY_SPARSITY[trial.params["pruning.target_sparsity"]]
        assert trial.values == [expected["target_dev"], expected["remaining_params"]]


def test_a_failed_trial_leaves_its_configuration_free_to_be_proposed_again():
    searcher = _two_configuration_searcher()
    searcher.suggest("t0")
    searcher.on_trial_complete("t0", result=None, error=True)
    assert searcher._finished_values == {}, "a failed configuration has no results to tell"
    searcher.suggest("t1")
    assert searcher.redrawn == 0


def test_rerun_duplicates_keeps_the_plain_optuna_searcher():
    from raysearch.distributed.distinct import DistinctOptunaSearch, NamedOptunaSearch
    from raysearch.distributed.search import _search
    from raysearch.distributed.settings import SearchSettings

    assert isinstance(_search(load_space("demo"), SearchSettings(), "s")[0].searcher, DistinctOptunaSearch)
    rerun = _search(load_space("demo"), SearchSettings(rerun_duplicates=True), "s")[0].searcher
    assert type(rerun) is NamedOptunaSearch
