"""Hugging Face hub access that fails fast and clearly when there is no network.

Hub ids keep the real ``from_pretrained`` path for users with a network. Without one, the hub
client retries for half a minute before it gives up; instead we probe the hub endpoint (1.5 s
timeout, skipped when ``HF_HUB_OFFLINE`` is set; a result is reused for a minute, not for the
life of the process) and, when it cannot be reached, load from the local cache only (per call
for models, inside :func:`cache_only` for datasets), or stop at once with a message that says
how to use a local directory.
This module imports only ``huggingface_hub`` (a fraction of a second), never transformers, so
the check runs before anything slow.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from hf_toolkit import compat
from hf_toolkit.errors import ModelLoadError

PROBE_TTL_SECONDS = 60.0
_probed: dict[str, tuple[float, bool]] = {}


def reachable() -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint does not answer within 1.5 s."""
    from huggingface_hub import constants

    if compat.hub_offline():
        return False
    endpoint = constants.ENDPOINT
    when, answer = _probed.get(endpoint, (float("-inf"), False))
    if time.monotonic() - when > PROBE_TTL_SECONDS:
        answer = _probe(endpoint)
        _probed[endpoint] = (time.monotonic(), answer)
    return answer


def _probe(endpoint: str) -> bool:
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=1.5).close()
        return True
    except OSError:
        return False


def cached(repo_id: str) -> bool:
    """True when the local hub cache has the repo's config (or tokenizer config)."""
    from huggingface_hub import try_to_load_from_cache

    return any(
        isinstance(try_to_load_from_cache(repo_id, name), str)
        for name in ("config.json", "tokenizer_config.json")
    )


@contextlib.contextmanager
def cache_only(active: bool = True) -> Iterator[None]:
    """Within the block, huggingface_hub and datasets read the local cache only (as HF_HUB_OFFLINE=1
    does, :func:`hf_toolkit.compat.hub_cache_only`); the previous setting is restored after it."""
    with compat.hub_cache_only() if active else contextlib.nullcontext():
        yield


def unreachable_message(repo_id: str, what: str) -> str:
    if "/" in repo_id:  # 'runs/mine' reads as a hub id when no such directory exists
        local = f"there is no directory {Path(repo_id).absolute()} (write ./{repo_id} to mean a local one)"
    else:
        local = "it is not a local directory"
    return (
        f"cannot load {what} '{repo_id}': {local}, the Hugging Face hub is unreachable "
        "(offline or HF_HUB_OFFLINE=1) and it is not in the local cache.\n"
        "  Use a local directory instead (one holding config.json and the weights/tokenizer files), "
        f"e.g. ./models/{repo_id.split('/')[-1]},\n"
        f"  downloaded where there is a network with: hf download {repo_id} --local-dir ./models/{repo_id.split('/')[-1]}"
    )


def require(repo_id: str, what: str) -> bool:
    """Check a hub id can be loaded; return True when it must come from the cache only."""
    if reachable():
        return False
    if not cached(repo_id):
        raise ModelLoadError(unreachable_message(repo_id, what))
    return True
