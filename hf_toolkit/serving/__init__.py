"""``hftk serve``: a trained run as an HTTP service, an OpenAI-compatible one for generative runs.

One process serves one run, loaded once at start-up (:mod:`~hf_toolkit.serving.engine`) through
the same pieces as the other commands: :mod:`hf_toolkit.core.rundir` loads it, a generative run answers
through :class:`hf_toolkit.apply.generation.Generator` (prompts encoded as its training encoded them,
decoding defaults from its generation config, the same length checks) and a classifier, QA or
fill-mask run through its task's ``predict_records``; so the server answers as ``hftk generate``
and ``hftk predict --json`` do.

Modules: ``app`` (FastAPI app factory, /, /health, /info), ``openai_api`` (/v1/completions,
/v1/chat/completions, /v1/models), ``task_api`` (/v1/classify, /v1/answer, /v1/fill-mask),
``schemas`` (request bodies), ``limits`` (bounds on a request; body-size middleware), ``errors``
(one OpenAI-shaped error body, no 500 for a user mistake), ``engine`` (the loaded run and how a
request runs on it: prepared once, batched with requests that decode alike, stopped early at its
time limit), ``worker`` (the queue in front of the model and the thread that lets running calls take
turns token by token), ``server`` (checks, then uvicorn), ``page.html`` (the playground).

Why not transformers' own server (``transformers serve``, ``transformers/cli/serving/``): its app
factory ``build_server`` takes a ``ModelManager`` that loads models itself, by hub id, on request
(``from_pretrained`` with its own Auto class, dtype and device; no LoRA adapter run, no decoder
tokenizer of an encoder-decoder pair), and it always routes ``/load_model`` and ``/reset`` (no
switch turns them off). Its completion handler encodes the bare prompt with the tokenizer
(ignoring a run's ``source_prefix``, ``prompt_template`` and source truncation), raises
``max_new_tokens`` to at least 1024 over the run's generation config, ignores ``n``, bounds nothing
(body, prompt, ``max_tokens``) and has no endpoints for classification, QA or fill-mask heads.
Fitting an already-loaded run into it would mean overriding its model manager's internals and
deleting routes from its router. hftk reuses what does fit: the ``openai`` package's request and
response types, which transformers' server also builds its answers from (``Completion``,
``ChatCompletion``, ``ChatCompletionChunk``, ``Model``), the same SSE chunk format ending in
``data: [DONE]``, and its design of one inference thread in front of the model; the endpoints
themselves are thin (a few dozen lines each) over hftk's Generator.
"""
