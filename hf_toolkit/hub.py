"""Hugging Face hub access that fails fast and clearly when there is no network.

Hub ids keep the real ``from_pretrained`` path for users with a network. Without one, the hub
client retries for half a minute before it gives up; instead we probe the hub endpoint once
(1.5 s timeout, skipped when ``HF_HUB_OFFLINE`` is set) and, when it cannot be reached, use the
local cache only, or stop at once with a message that says how to use a local directory.
This module imports only ``huggingface_hub`` (a fraction of a second), never transformers, so
the check runs before anything slow.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path
from urllib.parse import urlparse

from hf_toolkit.errors import ModelLoadError


@functools.cache
def reachable() -> bool:
    """False when HF_HUB_OFFLINE is set or the hub endpoint does not answer within 1.5 s."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
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


def use_cache_only() -> None:
    """Switch huggingface_hub in this process to the local cache (what HF_HUB_OFFLINE=1 does at startup)."""
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True


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
