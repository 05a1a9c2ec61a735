"""The uvicorn server ``hftk serve`` runs: :class:`Server`, which exits with status 0 after a
graceful shutdown on SIGTERM/SIGINT and first tells the engine to wind its streams down.

Imports uvicorn at module level: only :func:`hf_toolkit.serving.server.serve` imports this module,
once it has checked that the serve extra is installed.
"""

from __future__ import annotations

from typing import Any

import uvicorn

from hf_toolkit import compat


class Server(compat.ServerExitsCleanly, uvicorn.Server):
    """uvicorn's server, exiting with status 0 after a graceful shutdown on SIGTERM/SIGINT.

    `engine` (the :class:`~hf_toolkit.serving.engine.Engine` served) is told to wind down when the
    signal comes: open streams end on their own a second before uvicorn's grace period
    (``config.timeout_graceful_shutdown``) is over, rather than being cancelled by it (a
    CancelledError traceback, and a stream without [DONE]).
    """

    def __init__(self, config: uvicorn.Config, engine: Any = None) -> None:
        super().__init__(config)
        self.engine = engine

    def on_exit_signal(self) -> None:
        if self.engine is not None:
            grace = self.config.timeout_graceful_shutdown
            self.engine.close(grace=float("inf") if grace is None else max(grace - 1, 0))
