"""Ray Jobs: submit a search so that it shows in the Ray dashboard, and find it again by job id."""
import json
import shlex
import time

from ..errors import UserInputError

DEFAULT_DASHBOARD = "http://127.0.0.1:8265"
META_EXPERIMENT = "raysearch_experiment"
META_STORAGE = "raysearch_storage_path"
META_PATH = "raysearch_experiment_path"
AGENT_WAIT_S = 120
DEFAULT_AGENT_PORT = 52365  # Ray's dashboard agent listens here unless `ray start` is told otherwise
JOB_FILE = "raysearch_job.json"  # in the experiment folder from the moment of submission: which job writes it, and where
HALTED = ("STOPPED", "FAILED")  # a job that ended without finishing its search


def _client(dashboard: str):
    if "://" not in dashboard:  # Ray's client would try for a minute before saying why
        raise UserInputError("--dashboard", f"{dashboard!r} has no scheme", f"give it as http://{dashboard}")
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(dashboard)
    except Exception as e:
        raise UserInputError("--dashboard", f"cannot reach the Ray dashboard at {dashboard} ({type(e).__name__}: {str(e).splitlines()[0][:120]})",
                             "start the cluster with `ray start --head --dashboard-host 127.0.0.1` or give its --dashboard address") from None


def submit(argv: list[str], name: str, storage_path: str, experiment: str, dashboard: str, space: str) -> str:
    """Submit `raysearch <argv>` as a job; the metadata is enough to find and resume the experiment. The experiment
    folder gets JOB_FILE at once, so that `raysearch status` knows the job before the job has written anything."""
    client = _client(dashboard)
    entrypoint = shlex.join(["raysearch", *argv])  # each argument quoted: no shell string from user input
    metadata = {META_EXPERIMENT: name, META_STORAGE: storage_path, META_PATH: experiment, "raysearch_space": space}
    job_id = _submit(client, entrypoint, metadata, dashboard)
    record_job(experiment, job_id, dashboard)
    return job_id


def record_job(experiment: str, job_id: str, dashboard: str):
    from ..experiment import Folder

    try:
        Folder(experiment).write_text(JOB_FILE, json.dumps({"job_id": job_id, "dashboard": dashboard}))
    except OSError:
        pass  # storage only the cluster reaches: `status --job` still finds the job


def recorded_job(experiment: str) -> dict | None:
    from ..experiment import Folder

    try:
        folder = Folder(experiment)
        return json.loads(folder.read_text(JOB_FILE)) if folder.exists(JOB_FILE) else None
    except (OSError, ValueError, UserInputError):
        return None


def job_info(job_id: str, dashboard: str):
    """The job's JobDetails (status, metadata, entrypoint); a one-line error for an unknown job."""
    client = _client(dashboard)
    try:
        return client.get_job_info(job_id)
    except Exception as e:
        raise UserInputError("--job", f"no job {job_id!r} at {dashboard} ({type(e).__name__})", "copy the id from `ray job list` or the dashboard") from None


def resubmit(experiment: str, job_id: str | None, dashboard: str, argv: list[str]) -> str:
    """Submit `raysearch <argv>` (a resume) as a job carrying the original job's raysearch metadata."""
    metadata = dict(job_info(job_id, dashboard).metadata or {}) if job_id else {}
    metadata.setdefault(META_PATH, experiment)
    metadata["raysearch_resumes"] = job_id or ""
    new_id = _submit(_client(dashboard), shlex.join(["raysearch", *argv]), metadata, dashboard)
    record_job(experiment, new_id, dashboard)
    return new_id


def _submit(client, entrypoint: str, metadata: dict, dashboard: str) -> str:
    # a head that has just started (or is busy) answers "No available agent to submit job, please try again later"
    # until its job agent is up: tens of seconds on a loaded 2-CPU machine
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(entrypoint=entrypoint, metadata=metadata)
        except RuntimeError as e:
            if "No available agent" not in str(e):
                raise
            if _agent_port_failed(client):
                raise UserInputError("--dashboard", f"the Ray head at {dashboard} runs no job agent: its dashboard agent could not bind "
                                     f"its port ({DEFAULT_AGENT_PORT} unless `ray start` was given --dashboard-agent-listen-port), "
                                     "which another program holds (often another Ray)",
                                     "restart the head with free agent ports: --dashboard-agent-listen-port, "
                                     "--dashboard-agent-grpc-port, --runtime-env-agent-port") from None
            if time.monotonic() > deadline:
                raise UserInputError("--dashboard", f"the Ray head at {dashboard} has no job agent after {AGENT_WAIT_S} s",
                                     "check `ray status` and the dashboard's logs, then submit again") from None
            time.sleep(2)


def _agent_port_failed(client) -> bool:
    """Whether a node of the cluster reports its dashboard agent without an HTTP port: the agent could not bind it and
    runs without its job service (Ray 2.60: dashboardAgentListenPort -1, where a healthy head, also one submitted to
    right after `ray start`, shows its port)."""
    try:
        nodes = client._do_request("GET", "/nodes?view=summary").json()["data"]["summary"]
        return any((node.get("raylet") or {}).get("dashboardAgentListenPort") == -1 for node in nodes)
    except Exception:  # an answer of another shape says nothing either way: keep waiting
        return False


def experiment_of_job(job_id: str, dashboard: str) -> str:
    path = (job_info(job_id, dashboard).metadata or {}).get(META_PATH)
    if not path:
        raise UserInputError("--job", f"job {job_id!r} carries no raysearch metadata", "give a job that `raysearch launch --submit` started")
    return path


def list_searches(dashboard: str) -> list[dict]:
    """The searches a cluster ran as jobs (newest first): job id, experiment, storage, job status, and trials
    finished of those requested, read from the experiment where this machine can reach its storage."""
    from ..experiment import read_meta
    from .status import requested_trials, trial_table

    rows = []
    jobs = [job for job in _client(dashboard).list_jobs() if (job.metadata or {}).get(META_PATH)]
    for job in sorted(jobs, key=lambda j: j.start_time or 0, reverse=True):
        path = job.metadata[META_PATH]
        row = {"job_id": job.submission_id or job.job_id, "experiment": job.metadata.get(META_EXPERIMENT), "job_status": str(job.status.value),
               "trials": "?", "storage": path}
        try:
            frame, requested = trial_table(path), requested_trials(read_meta(path))
            done = int((frame["status"] == "TERMINATED").sum()) if len(frame) else 0
            row["trials"] = f"{done}/{requested}"
        except (UserInputError, OSError):
            pass  # storage this machine cannot read, or an experiment not written yet
        rows.append(row)
    return rows
