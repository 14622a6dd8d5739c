"""Connect to a Ray cluster, or start a local one, the same way in every job.

Access: a Ray cluster runs any code its clients send, so nothing here turns Ray's token
authentication off. A local Ray started here uses token authentication (``RAY_AUTH_MODE=token``)
unless the caller set ``RAY_AUTH_MODE`` explicitly; Ray reads the token from ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` and generates the latter (mode 0600) when none
exists. ``ray job submit`` and the dashboard need the same token: see docs/operations.md.
Joining a cluster (``address``) uses the token when one is available, as Ray does.

Credentials: only the S3 endpoint and region go to the workers in the job's ``runtime_env``;
keys and session tokens come from each node's own AWS provider chain (instance profile, IRSA,
its environment), never through the job definition, which Ray stores and shows in its dashboard.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket

# Storage settings the workers need to reach the same object store as the driver. Not secrets.
FORWARDED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def ensure_ray(address: str | None = None, num_cpus: int | None = None, *, log_to_driver: bool = True) -> bool:
    """Make sure Ray is initialised; returns True when this call started a local instance.

    ``address`` (or ``RAY_ADDRESS``) joins an existing cluster, e.g. one started with
    ``ray start --head`` or the one a ``ray job submit`` runs in; otherwise a local Ray starts,
    with token authentication and every port Ray lets us choose on loopback.
    ``log_to_driver=False`` keeps the output of Ray's workers in Ray's session logs instead of
    echoing it here (the demo shows one line per event of its own).
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runtime_env = {"env_vars": forwarded_env()}
    if address:
        ray.init(address=address, logging_level=logging.WARNING, runtime_env=runtime_env,
                 log_to_driver=log_to_driver)
        return False
    # RAY_AUTH_MODE is left as the caller set it: unset, Ray 2.60 turns token auth on for a new local
    # instance and generates ~/.ray/auth_token when no token exists. (Setting it here, after
    # `import ray` read its config, would skip that generation and the GCS would exit.)
    if os.environ.get("RAY_AUTH_MODE", "token").lower() == "token":
        ensure_auth_token()
    # The dashboard (on loopback) shows jobs, actors and logs; without it Ray Train's placement-group
    # cleaner also logs "Failed to query Ray Train Controller actor state" every few seconds.
    # The GCS, raylet and object manager bind to the machine's routable address: Ray maps a
    # loopback node address back to it (services.resolve_ip_for_localhost), so the token guards them.
    with pinned_gcs_port() as gcs_address:
        # Ray code inside the cluster that looks the cluster up again (Ray Train V2's placement-group
        # cleaner queries the State API without an address) must find this one, not the newest Ray
        # on the machine: with two local instances it would see its own run's controller as gone and
        # remove the run's placement group, killing a healthy training run.
        runtime_env["env_vars"]["RAY_ADDRESS"] = gcs_address
        # address="local": a new instance even when `ray start` left one running on this machine
        # (ray.init() would join that one silently); pass --address auto to join it.
        ray.init(address="local", num_cpus=num_cpus, logging_level=logging.WARNING, include_dashboard=True,
                 dashboard_host="127.0.0.1", runtime_env=runtime_env, log_to_driver=log_to_driver)
    return True


@contextlib.contextmanager
def pinned_gcs_port():
    """A free port for the GCS of a local Ray started inside the block (Ray reads
    ``RAY_GCS_SERVER_PORT``); yields its address. The variable is restored afterwards."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = os.environ.get("RAY_GCS_SERVER_PORT")
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        if before is None:
            os.environ.pop("RAY_GCS_SERVER_PORT", None)
        else:
            os.environ["RAY_GCS_SERVER_PORT"] = before


def default_token_path() -> str:
    """Where Ray looks for its token when neither RAY_AUTH_TOKEN nor RAY_AUTH_TOKEN_PATH is set."""
    return os.path.join(os.path.expanduser("~"), ".ray", "auth_token")


def ensure_auth_token() -> str | None:
    """Create Ray's default token file (64 hex digits, mode 0600) unless a token is configured.

    Returns the path created, or None when a token was already there. Ray would generate the file
    itself, but readable by every local user (umask 022); a reader of the token can run code on
    the cluster.
    """
    import secrets

    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = default_token_path()
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def forwarded_env() -> dict[str, str]:
    """The driver's S3 endpoint and region, handed to every worker of the job (no credentials)."""
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
