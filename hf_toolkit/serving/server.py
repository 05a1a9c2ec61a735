"""``hftk serve``: check the address, load the run once, and run the app under uvicorn until SIGTERM/Ctrl-C.

Everything a user can get wrong (a missing extra, a bad host, a port in use, a run that does not
exist) is an :class:`~hf_toolkit.errors.HftkError` raised before the model loads. On SIGTERM or
SIGINT the engine takes no more requests (queued ones get 503) and gives the generations in progress
``GRACE_SECONDS`` less one to finish, then ends them (a stream with an error event and ``[DONE]``);
uvicorn stops accepting connections, waits for the open ones to close (at most ``GRACE_SECONDS``,
after which it would cancel them) and the process exits with status 0.
"""

from __future__ import annotations

import socket
import sys

from hf_toolkit.errors import HftkError
from hf_toolkit.serving.limits import Limits

GRACE_SECONDS = 5


def check_available() -> None:
    """The serve extra is installed (fastapi, uvicorn, openai)."""
    import importlib.util

    missing = [name for name in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(name) is None]
    if missing:
        raise HftkError(f"hftk serve needs {', '.join(missing)}: pip install 'hf_toolkit[serve]'")


def check_address(host: str, port: int) -> None:
    """The address can be bound (checked before the model loads, which takes a while)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise HftkError(f"--host {host}: not an address of this machine ({error.strerror}); "
                        "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as error:
            raise HftkError(f"cannot listen on {host}:{port}: {error.strerror}; give another --port "
                            "(or stop what uses it)") from None


def serve(reference: str, *, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          log_level: str = "info") -> None:
    """Serve `reference` (run directory, local model directory or hub id) until stopped."""
    from hf_toolkit.core import rundir

    check_available()
    run = rundir.open_run(reference)
    check_address(host, port)
    import uvicorn

    from hf_toolkit.serving.app import create_app
    from hf_toolkit.serving.engine import Engine
    from hf_toolkit.serving.uvicorn_server import Server

    engine = Engine.from_run(run, limits or Limits())
    app = create_app(engine)
    chat = f" and {'/v1/chat/completions'}" if engine.chat else ""
    shown = f"[{host}]" if ":" in host else host
    print(f"hftk: serving {engine.name} ({engine.kind}): POST {engine.endpoint}{chat}; playground http://{shown}:{port}/",
          file=sys.stderr, flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=GRACE_SECONDS)
    Server(config, engine).run()
