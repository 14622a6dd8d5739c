"""Connect to a Ray cluster, or start a local one, the same way in every job."""
from __future__ import annotations

import logging
import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Make sure Ray is initialised; returns True when this call started a local instance.

    ``address`` (or ``RAY_ADDRESS``) joins an existing cluster, e.g. one started with
    ``ray start --head`` or the one a ``ray job submit`` runs in; otherwise a local Ray starts.
    """
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    # Ray 2.60 turns on token auth for new local clusters; nothing here crosses the machine.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    runtime_env = {"env_vars": forwarded_env()}
    if address:
        ray.init(address=address, logging_level=logging.WARNING, runtime_env=runtime_env)
        return False
    # The dashboard (on loopback) shows jobs, actors and logs; without it Ray Train's placement-group
    # cleaner also logs "Failed to query Ray Train Controller actor state" every few seconds.
    ray.init(num_cpus=num_cpus, logging_level=logging.WARNING, include_dashboard=True,
             dashboard_host="127.0.0.1", runtime_env=runtime_env)
    return True


# Storage settings the workers need to reach the same object store as the driver.
FORWARDED_ENV_PREFIXES = ("AWS_",)


def forwarded_env() -> dict[str, str]:
    """The driver's AWS_* variables, handed to every worker of the job (endpoint, keys, region)."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
