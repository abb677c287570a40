"""The fault table: searches of the `demo` space run through real faults, and what each kept.

    python bench/faults.py [--only workers,driver,node,disk] [--trials 4] [--seed 0]

Every search runs through the CLI, as a user runs it, against a Ray cluster of its own on 127.0.0.1 (`ray start`,
its session in a folder of its own, so that only its processes are touched). The scenarios:
  * workers: the process that trains a trial (a 1-worker trial trains in Tune's trial actor) SIGKILLed every few
             seconds, --worker-kills times over the search;
  * driver:  the search's driver SIGKILLed at random moments, --driver-kills times, each followed by
             `raysearch resume` (or `launch` again, when the driver died before Tune's first save);
  * node:    a 2-node cluster (two `ray start`), the worker node's raylet SIGKILLed mid-search;
  * disk:    the experiment's storage on a small tmpfs that fills mid-search; then it is grown and the search resumed
             (needs root for `mount`; skipped otherwise).
What each row checks: every trial ran once (none lost or duplicated) and finished, every evaluation is in its
history, and a restarted trial continued from its last checkpoint (the step it resumed from is its last reported
step before the fault: at most one checkpoint interval of training lost). Printed as a Markdown table for
docs/RELIABILITY.md.
"""
import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from raysearch.distributed.auth import use_cluster_token

use_cluster_token()  # token auth as the CLI uses it: a second `ray start --address` must present the cluster's token

# demo trials of 300 steps with an evaluation and a checkpoint every 50: six chances per trial to lose work
STEPS = ["--set", "max_steps=300", "--set", "eval_every=50"]
EVALUATIONS = (50, 100, 150, 200, 250, 300)
# every process of these searches stays on loopback (see raysearch.distributed.cluster.loopback_only_ray)
ENV = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TRAIN_V2_ENABLED": "1", "OMP_NUM_THREADS": "1"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """`ray start` nodes on 127.0.0.1 whose sessions live in one temporary folder; stopped by that folder."""

    def __init__(self, cpus_per_node: list[int]):
        # Ray's single-machine mode (loopback only) refuses a second node: a 2-node cluster runs in Ray's default mode
        self.env = ENV if len(cpus_per_node) == 1 else {k: v for k, v in ENV.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        for attempt in range(3):  # a loaded machine can miss Ray's start-up deadline (its metrics agent's port file)
            self.temp_dir = tempfile.mkdtemp(prefix="rs-fault-", dir="/tmp")
            try:
                self._start(cpus_per_node)
                return
            except subprocess.CalledProcessError:
                self.stop()
                if attempt == 2:
                    raise

    def _start(self, cpus_per_node: list[int]):
        port = _port()
        self.address = f"127.0.0.1:{port}"
        common = ["--node-ip-address", "127.0.0.1", "--disable-usage-stats", "--temp-dir", self.temp_dir]
        subprocess.run(["ray", "start", "--head", "--port", str(port), "--num-cpus", str(cpus_per_node[0]), "--include-dashboard",
                        "false", *common], check=True, capture_output=True, env=self.env)
        for cpus in cpus_per_node[1:]:
            subprocess.run(["ray", "start", "--address", self.address, "--num-cpus", str(cpus), *common],
                           check=True, capture_output=True, env=self.env)

    def processes(self) -> list[psutil.Process]:
        roots = [p for p in psutil.process_iter(["cmdline"]) if any(self.temp_dir in a for a in p.info["cmdline"] or [])]
        found = {}
        for root in roots:
            with contextlib.suppress(psutil.Error):
                for p in [root, *root.children(recursive=True)]:
                    found[p.pid] = p
        return list(found.values())

    def named(self, name: str) -> list[psutil.Process]:
        out = []
        for p in self.processes():
            with contextlib.suppress(psutil.Error):
                if p.name() == name or name in " ".join(p.cmdline()[:1]):
                    out.append(p)
        return out

    def stop(self):
        procs = self.processes()
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=10)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def raysearch(*args) -> list[str]:
    return [sys.executable, "-m", "raysearch.cli", *args]


def launch_args(cluster: Cluster, storage: str, name: str, trials: int, seed: int, *extra) -> list[str]:
    # exactly `trials` trainings: one seed per configuration, no baselines, no confirmation stage
    return raysearch("launch", "demo", "--address", cluster.address, "--num-samples", str(trials), "--storage-path", storage,
                     "--name", name, "--seed", str(seed), "--repeats", "1", "--no-baselines", "--confirm-seeds", "0", *STEPS, *extra)


def run(argv: list[str], log: Path, env: dict) -> int:
    with log.open("a") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env).returncode


def start(argv: list[str], log: Path, env: dict) -> subprocess.Popen:
    out = log.open("a")
    return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_group(process: subprocess.Popen):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def history_lines(experiment: Path) -> int:
    return sum(len(f.read_text().splitlines()) for f in (experiment / "trial_history").glob("*.jsonl")) if (experiment / "trial_history").is_dir() else 0


def check(experiment: Path, trials: int) -> dict:
    """What the experiment kept: trials, their status and histories, and where restarted trials continued from."""
    from analysis.frames import history_frame, trial_frame

    frame = trial_frame(str(experiment))
    history = history_frame(str(experiment))
    complete = {t: tuple(sorted(g["step"])) == EVALUATIONS for t, g in history.groupby("trial_id")}
    restarts, lost = 0, []
    for path in (experiment / "trial_history").glob("*.jsonl"):
        previous = None
        for line in path.read_text().splitlines():
            result = json.loads(line)
            if result.get("resumed_from_step") is not None:
                restarts += 1
                lost.append((previous or 0) - result["resumed_from_step"])  # reported steps not covered by a checkpoint
            previous = result["step"]
    return {"trials": f"{len(frame)}/{trials}", "unique": bool(frame["trial_id"].is_unique),
            "finished": int((frame["status"] == "TERMINATED").sum()),
            "histories complete": sum(complete.get(t, False) for t in frame["trial_id"]),
            "restarts from a checkpoint": restarts, "reported steps lost": max(lost, default=0)}


# ------------------------------------------------------------------ scenarios


# Ray titles an actor's process by the method it runs: a Tune function trial's actor while it trains (an idle reused
# actor is titled without the method)
TRAINING_PROCESS = "ray::ImplicitFunc.train"


def worker_kills(root: Path, trials: int, seed: int, kills: int) -> dict:
    cluster = Cluster([2])
    try:
        log = root / "workers.log"
        search = start(launch_args(cluster, str(root), "workers", trials, seed, "--max-failures", str(kills)), log, cluster.env)
        sent, rng, seen = 0, random.Random(seed), 0
        while search.poll() is None and sent < kills:
            # each kill after new progress (an evaluation, so a checkpoint), some seconds into the next interval
            while history_lines(root / "workers") == seen and search.poll() is None:
                time.sleep(1)
            seen = history_lines(root / "workers")
            time.sleep(rng.uniform(2, 10))
            workers = cluster.named(TRAINING_PROCESS)
            if workers:
                with contextlib.suppress(psutil.Error):
                    rng.choice(workers).kill()
                    sent += 1
        code = search.wait()
        return {"fault": f"a trial's training process SIGKILLed ({sent} times)", "exit": code, **check(root / "workers", trials)}
    finally:
        cluster.stop()


def driver_kills(root: Path, trials: int, seed: int, kills: int) -> dict:
    import optuna

    cluster = Cluster([2])
    try:
        log, experiment = root / "driver.log", root / "driver"
        db = f"sqlite:///{root / 'driver.db'}"
        rng, relaunched = random.Random(seed), 0
        launch = launch_args(cluster, str(root), "driver", trials, seed, "--optuna-storage", db)
        argv = launch
        for _ in range(kills):
            before = history_lines(experiment)
            driver = start(argv, log, cluster.env)
            deadline = time.time() + rng.uniform(20, 60)
            while time.time() < deadline and driver.poll() is None:
                time.sleep(1)
            if driver.poll() is not None:  # the search ended before this kill
                break
            if history_lines(experiment) == before:  # no progress yet: wait for one evaluation, then kill
                while history_lines(experiment) == before and driver.poll() is None:
                    time.sleep(1)
            kill_group(driver)
            saved = any(experiment.glob("experiment_state-*.json"))
            argv = raysearch("resume", str(experiment), "--address", cluster.address) if saved else launch
            relaunched += not saved
        code = run(argv, log, cluster.env)
        study = optuna.load_study(study_name="driver", storage=db)
        optuna_complete = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
        return {"fault": f"driver SIGKILLed ({kills} times; launched again {relaunched})", "exit": code,
                **check(experiment, trials), "optuna complete": f"{optuna_complete}/{trials}"}
    finally:
        cluster.stop()


def node_loss(root: Path, trials: int, seed: int) -> dict:
    cluster = Cluster([1, 1])
    try:
        log = root / "node.log"
        search = start(launch_args(cluster, str(root), "node", trials, seed), log, cluster.env)
        while history_lines(root / "node") < 2 and search.poll() is None:
            time.sleep(1)
        raylets = sorted(cluster.named("raylet"), key=lambda p: p.create_time())
        lost = raylets[-1]  # the second node's
        for p in [lost, *lost.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        code = search.wait()
        return {"fault": "worker node's raylet SIGKILLed (2-node cluster)", "exit": code, **check(root / "node", trials)}
    finally:
        cluster.stop()


def disk_full(root: Path, trials: int, seed: int) -> dict:
    mount = root / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        return {"fault": "storage full (skipped: mounting a tmpfs needs root)"}
    cluster = Cluster([2])
    try:
        log = root / "disk.log"
        first = run(launch_args(cluster, str(mount), "disk", trials, seed), log, cluster.env)
        full = "No space left on device" in log.read_text()
        subprocess.run(["mount", "-o", "remount,size=256m", str(mount)], check=True)
        experiment = mount / "disk"
        saved = any(experiment.glob("experiment_state-*.json"))
        code = run(raysearch("resume", str(experiment), "--address", cluster.address) if saved else
                   launch_args(cluster, str(mount), "disk", trials, seed), log, cluster.env)
        return {"fault": f"storage full mid-search (first run exit {first}, disk full seen: {full}), then grown and resumed",
                "exit": code, **check(experiment, trials)}
    finally:
        cluster.stop()
        subprocess.run(["umount", str(mount)], capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="workers,driver,node,disk")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--worker-kills", type=int, default=10)
    parser.add_argument("--driver-kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep the experiments in this folder (default: a temporary one, removed)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="raysearch-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    scenarios = {"workers": lambda: worker_kills(root, args.trials, args.seed, args.worker_kills),
                 "driver": lambda: driver_kills(root, args.trials, args.seed, args.driver_kills),
                 "node": lambda: node_loss(root, args.trials, args.seed),
                 "disk": lambda: disk_full(root, args.trials, args.seed)}
    rows = []
    for name in args.only.split(","):
        started = time.time()
        try:
            row = scenarios[name]()
        except Exception as e:  # a scenario that could not be set up is a row saying so, not the end of the table
            row = {"fault": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        row["minutes"] = round((time.time() - started) / 60, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    print("\n| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    print(f"\nlogs and experiments: {root}")


if __name__ == "__main__":
    main()
