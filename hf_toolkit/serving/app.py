"""The FastAPI app factory: one loaded run (an :class:`~hf_toolkit.serving.engine.Engine`) -> its routes.

Routes: ``GET /`` (the playground page, ``page.html``; ``HEAD /`` too), ``GET /health`` (with the requests queued
and the model calls so far by requests per batch), ``GET /info`` (what the page and clients need:
model id, task, endpoint and its form: the input roles and options of its body, chat, mask token,
limits, decoding defaults),
the OpenAI-compatible routes (:mod:`hf_toolkit.serving.openai_api`) and the task routes
(:mod:`hf_toolkit.serving.task_api`). A run answers only its own task's endpoint. There is no
route that loads a model or reads or writes a file, and FastAPI's /docs pages (which fetch their
scripts from a CDN) are off; /openapi.json describes the routes.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from hf_toolkit.serving import openai_api, task_api
from hf_toolkit.serving.engine import Engine
from hf_toolkit.serving.errors import install
from hf_toolkit.serving.limits import BodyChecks, Limits
from hf_toolkit.serving.schemas import CompletionRequest
from hf_toolkit.tasks import TASKS

PAGE = "page.html"
PROMPT_FORM = {"inputs": [{"role": "prompt", "required": True,
                            "description": CompletionRequest.model_fields["prompt"].description}], "options": []}
GENERATION_FIELDS = ("max_new_tokens", "max_length", "do_sample", "temperature", "top_k", "top_p", "num_beams",
                     "repetition_penalty")


def create_app(engine: Engine, limits: Limits | None = None) -> Any:
    """The app serving `engine`'s run; the engine's worker stops with the app."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    limits = limits or engine.limits

    @asynccontextmanager
    async def lifespan(_app):
        yield
        engine.close()

    app = FastAPI(title=f"hftk serve: {engine.name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.engine = engine
    app.add_middleware(BodyChecks, limit=limits.max_body_bytes, set_by=limits.source("max_body_bytes"))
    install(app)
    page = resources.files("hf_toolkit.serving").joinpath(PAGE).read_text(encoding="utf-8")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)  # HEAD: what uptime checks send
    def playground() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        # batches: the model calls so far, by how many requests each ran ({"1": 40, "8": 3})
        return {"status": "ok", "model": engine.name, "queued": engine.worker.waiting,
                "batches": {str(size): count for size, count in sorted(engine.worker.batches.items())}}

    @app.get("/info")
    def info() -> dict:
        defaults = {}
        if engine.generates:
            defaults = {key: getattr(engine.defaults, key, None) for key in GENERATION_FIELDS}
            defaults = {key: value for key, value in defaults.items() if value is not None}
        # The endpoint's body as a form (task_api.form); a completion's is OpenAI's, of which the page asks a prompt.
        body = PROMPT_FORM if engine.generates else task_api.form(TASKS[engine.task])
        return {
            "model": engine.name, "task": engine.kind, "endpoint": engine.endpoint, **body, "chat": engine.chat,
            "continues_prompt": engine.generator.continues_prompt if engine.generates else None,
            "mask_token": getattr(engine.tokenizer, "mask_token", None), "limits": limits.public(),
            "generation_defaults": defaults,
        }

    openai_api.add_routes(app, engine, limits)
    task_api.add_routes(app, engine, limits)
    return app
