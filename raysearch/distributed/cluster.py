"""Ray start-up: a local Ray of raysearch's own on 127.0.0.1, or a cluster that is checked to answer first."""
import contextlib
import os
import socket

import ray

from ..errors import UserInputError
from .quiet import RAY_LOGGING_LEVEL


def init_ray(address: str | None, verbose: bool = True):
    """Connect to a cluster, or start a local Ray bound to 127.0.0.1 without a dashboard. Not `verbose`: Ray's own
    log lines below ERROR (start-up, token-auth notices) are not shown (raysearch.distributed.quiet)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    level = RAY_LOGGING_LEVEL[verbose]
    if address:
        check_cluster_answers(address)
        ray.init(address=address, log_to_driver=False, logging_level=level)
    else:
        # "local": a new Ray of our own, never the cluster some earlier `ray start` recorded (a stale record hangs)
        with loopback_only_ray():
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, logging_level=level)


def check_cluster_answers(address: str, timeout_s: float = 3.0):
    """A cluster address that nothing answers fails in one line within seconds (Ray itself retries for a minute or
    hangs). `auto` is the cluster a `ray start` recorded on this machine."""
    from ray._private.utils import read_ray_address

    given = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS") or read_ray_address()
        if not address:
            raise UserInputError("--address", "auto: no cluster is recorded on this machine (no `ray start` ran here)",
                                 "start one with `ray start --head`, give its address, or leave --address out for a local Ray")
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        recorded = f" (recorded as {address})" if given == "auto" else ""
        raise UserInputError("--address", f"nothing answers at {given}{recorded}: {e.__class__.__name__}: {str(e)[:80] or 'not host:port'}",
                             "start the cluster (`ray start --head`) or give the address it printed; leave --address out for a local Ray") from None


@contextlib.contextmanager
def loopback_only_ray():
    """Ray turns a loopback node address into the machine's routable one, and binds its GCS, raylet and workers there
    (measured: on every interface), unless it runs as the single-machine Ray it is on macOS and Windows. A Ray that
    raysearch starts for itself needs no other machine, so it starts that way and listens on 127.0.0.1 only: the
    variable reaches the processes Ray starts, the constant is this process's (it has imported Ray already). Both are
    put back afterwards; the started node keeps its address."""
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    saved = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name], ray_constants.ENABLE_RAY_CLUSTER = "0", False
    try:
        yield
    finally:
        if saved[0] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
