"""A Ray that raysearch starts for itself listens on loopback only (Ray's own default binds the routable address)."""
import ipaddress

import psutil
import ray

from raysearch.cli import main
from raysearch.distributed.cluster import init_ray
from raysearch.distributed.status import trial_table

from .test_search import FAST


@ray.remote
class _Worker:  # a worker process of its own, as every Train worker and trial is
    def ready(self):
        return True


def _listeners(process: psutil.Process) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket of a process and its descendants."""
    family = {process.pid: process, **{p.pid: p for p in process.children(recursive=True)}}
    found = []
    for connection in psutil.net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in family:
            with_name = family[connection.pid].name() if family[connection.pid].is_running() else "?"
            found.append((connection.laddr.ip, connection.laddr.port, with_name))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


def test_a_local_ray_listens_on_loopback_only(tmp_path):
    assert not ray.is_initialized()
    init_ray(None)
    try:
        assert ray.get(_Worker.remote().ready.remote())
        listeners = _listeners(psutil.Process())
        names = {name for _, _, name in listeners}
        assert "gcs_server" in names and "raylet" in names  # the servers were found, so the check below means something
        exposed = [entry for entry in listeners if not _is_loopback(entry[0])]
        assert not exposed, f"listening beyond loopback: {exposed}"
        # and a search runs on it: a Tune trial whose Ray Train worker trains (launch uses the Ray already started)
        assert main(["launch", "demo", "--num-samples", "1", "--storage-path", str(tmp_path / "exp"), "--name", "local", *FAST]) == 0
        assert list(trial_table(str(tmp_path / "exp" / "local"))["status"]) == ["TERMINATED"]
    finally:
        ray.shutdown()
    assert __import__("ray._private.ray_constants", fromlist=["x"]).ENABLE_RAY_CLUSTER  # put back for later connections
