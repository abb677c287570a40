"""Ray 2.60 token authentication: clusters started with `ray start` require a token by default.

The token lives in ~/.ray/auth_token and clients must run with RAY_AUTH_MODE=token to send it.
A user's own RAY_AUTH_MODE (e.g. `disabled` for a cluster without auth) is left alone. Ray reads the
variable when it is imported, so every entry point (the CLI, the study and bench scripts) calls
`use_cluster_token()` before it imports ray.
"""
import os
import sys
from pathlib import Path

TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def use_cluster_token():
    # once ray is imported the driver's mode is fixed; changing the variable then would only reach the
    # processes of a local cluster it starts, which would then disagree with the driver
    if "ray" in sys.modules or "RAY_AUTH_MODE" in os.environ:
        return
    if TOKEN_FILE.is_file() or os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_MODE"] = "token"
