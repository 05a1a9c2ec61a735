"""hftk serve batches concurrent requests: what waits while the model is busy runs as one batch.

The worker's scheduling without a model (:class:`~hf_toolkit.serving.engine.Worker`): oldest
first, later jobs of the same key pulled into its batch up to ``max_batch_size``, other keys left
in order, a failing batch re-run one job at a time, clients that left dropped, the queue limit.
Then over HTTP (FastAPI's TestClient, a tiny random GPT-2 and BERT): the worker is held busy
while requests queue, so each test knows exactly what waits together. Batched greedy completions
are the texts (choices, finish reasons, usage) each request gets alone; requests with other
decoding settings, a seed or a stream are not batched with them; the task endpoints batch too.

Why the greedy comparison means something on a random model: a 1-layer GPT-2 with 16-wide
embeddings puts its logits close together, so a float difference from left padding would flip an
argmax here sooner than in a trained model; the prompts differ in length (1 to 11 tokens, so up to
10 pad positions) and generate 12 tokens each, and every text must match exactly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager

import pytest
from test_serve import build_bert, build_gpt2, client_for, events, same_records

from hf_toolkit.cli import serve_limits
from hf_toolkit.serving.errors import ApiError
from hf_toolkit.serving.worker import Worker

# --------------------------------------------------------------------------------------------
# The worker alone


def run_jobs(worker: Worker, jobs: list[tuple[str, str | None, int]], calls: list[list[str]]) -> list:
    """Queue `jobs` (name, key, size) behind a job that holds the worker, release it, and return each outcome."""

    def run(items: list[str]) -> list[str]:
        calls.append(items)
        if "bad" in items:
            raise ValueError("bad input")
        return [item.upper() for item in items]

    async def main() -> list:
        release = threading.Event()
        held = worker.start(lambda: release.wait(30))
        futures = [worker.start_batch(name, run, key=key, size=size) for name, key, size in jobs]
        release.set()
        await held
        return await asyncio.gather(*futures, return_exceptions=True)

    return asyncio.run(main())


def test_waiting_jobs_of_the_oldest_jobs_key_run_with_it_up_to_the_batch_size():
    calls: list[list[str]] = []
    worker = Worker(max_queue=20, max_batch_size=4)
    outcomes = run_jobs(worker, [("a1", "A", 1), ("b1", "B", 1), ("a2", "A", 2), ("solo", None, 1), ("a3", "A", 1),
                                 ("a4", "A", 1), ("b2", "B", 1)], calls)
    assert outcomes == ["A1", "B1", "A2", "SOLO", "A3", "A4", "B2"]
    # a1 is oldest: a2 and a3 join it (4 sequences), a4 would make 5; then b1 with b2; solo alone; a4
    assert calls == [["a1", "a2", "a3"], ["b1", "b2"], ["solo"], ["a4"]]
    assert worker.batches == {1: 3, 3: 1, 2: 1}  # the job that held the worker is one of the 1s
    worker.stop()


def test_batch_size_1_runs_one_job_at_a_time_in_arrival_order():
    calls: list[list[str]] = []
    worker = Worker(max_queue=20, max_batch_size=1)
    run_jobs(worker, [("a1", "A", 1), ("b1", "B", 1), ("a2", "A", 1)], calls)
    assert calls == [["a1"], ["b1"], ["a2"]]
    worker.stop()


def test_a_failing_batch_is_run_again_one_job_at_a_time_so_only_the_bad_one_fails():
    calls: list[list[str]] = []
    worker = Worker(max_queue=20, max_batch_size=8)
    good, bad, other = run_jobs(worker, [("good", "A", 1), ("bad", "A", 1), ("other", "A", 1)], calls)
    assert (good, other) == ("GOOD", "OTHER") and isinstance(bad, ValueError)
    assert calls == [["good", "bad", "other"], ["good"], ["bad"], ["other"]]
    worker.stop()


def test_a_job_whose_client_left_is_dropped_unrun_and_the_queue_limit_holds():
    calls: list[list[str]] = []
    worker = Worker(max_queue=3, max_batch_size=8, queue_set_by=serve_limits().source("max_queue"))

    async def main():
        release = threading.Event()
        held = worker.start(lambda: release.wait(30))
        kept = worker.start_batch("kept", lambda items: calls.append(items) or items, key="A", size=1)
        left = worker.start_batch("left", lambda items: calls.append(items) or items, key="A", size=1)
        with pytest.raises(ApiError, match=r"server busy: 3 requests are queued .*\(hftk serve --max-queue sets it\)") as busy:
            worker.start(lambda: None)
        assert busy.value.status == 503
        left.cancel()  # the client went away
        await asyncio.sleep(0)  # (done callbacks run on the loop's next turn)
        assert worker.waiting == 2
        release.set()
        await held
        return await kept

    assert asyncio.run(main()) == "kept"
    assert calls == [["kept"]] and worker.waiting == 0
    worker.stop()


def test_running_calls_take_turns_so_a_short_job_ends_while_a_long_one_runs():
    """A call that hands the model back between its steps (a generation does) lets later jobs run meanwhile."""
    worker = Worker(max_queue=20, max_batch_size=4, max_running=2)
    log: list[str] = []

    def long(items: list[str]) -> list[str]:
        for step in range(50):
            log.append(f"long {step}")
            worker.turn()
        return items

    async def main():
        release = threading.Event()
        held = worker.start(lambda: release.wait(30))
        first = worker.start_batch("long", long, key=None, size=1)
        second = worker.start_batch("short", lambda items: log.append("short") or items, key=None, size=1)
        release.set()
        await held
        return await asyncio.gather(first, second)

    assert asyncio.run(main()) == ["long", "short"]
    assert log.index("short") < log.index("long 3")  # not after the long job's 50 steps
    worker.stop()


def test_a_job_still_waiting_at_its_deadline_is_not_run_and_gets_its_error():
    worker = Worker(max_queue=20)
    ran: list = []

    async def main():
        release = threading.Event()
        held = worker.start(lambda: release.wait(30))
        late = worker.start_batch("late", lambda items: ran.append(items) or items, key=None, size=1,
                                  deadline=time.monotonic() + 0.05, expired=lambda: ApiError(504, "too late"))
        await asyncio.sleep(0.2)
        release.set()
        await held
        return await asyncio.gather(late, return_exceptions=True)

    [error] = asyncio.run(main())
    assert isinstance(error, ApiError) and error.status == 504 and ran == []
    worker.stop()


# --------------------------------------------------------------------------------------------
# Over HTTP


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return build_gpt2(tmp_path_factory.mktemp("batching") / "tiny-gpt2")


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    with client_for(gpt2_dir, max_tokens=40, max_batch_size=16) as client:
        yield client


def engine_of(client):
    return client.app.state.engine


@contextmanager
def held(client):
    """The worker busy on a job that waits for the block to end: requests queue behind it meanwhile."""
    engine, release = engine_of(client), threading.Event()

    async def hold():
        engine.worker.start(lambda: release.wait(60))

    client.portal.call(hold)
    try:
        yield engine
    finally:
        release.set()


def concurrently(client, requests: list[dict], streamed: tuple[int, ...] = ()) -> tuple[list, dict]:
    """Send `requests` at once while the worker is held, so all of them wait together; their
    responses (a stream's: its text and last chunk) and the batches that ran them, {requests per batch: calls}."""
    results: list = [None] * len(requests)

    def send(i: int) -> None:
        if i in streamed:
            with client.stream("POST", "/v1/completions", json={**requests[i], "stream": True}) as response:
                results[i] = (response.status_code, "".join(response.iter_text()))
        else:
            response = client.post("/v1/completions", json=requests[i])
            results[i] = (response.status_code, response.json())

    engine = engine_of(client)
    before = engine.worker.batches
    with held(client):
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while engine.worker.waiting < len(requests) + 1:
            assert time.monotonic() < deadline, f"only {engine.worker.waiting - 1} of {len(requests)} requests queued"
            time.sleep(0.02)
    for thread in threads:
        thread.join(120)
    ran = engine.worker.batches
    ran.subtract(before)
    ran[1] -= 1  # the job that held the worker
    return results, {size: count for size, count in ran.items() if count}


PROMPTS = ["Once upon a time", "Hi", "The little fox ran into the dark forest and found a", "x", "Tom and Sue",
           "She opened the door, looked outside and", "1 2 3", "A"]


def test_concurrent_greedy_completions_are_batched_and_each_is_the_text_it_gets_alone(gpt2):
    requests = [{"prompt": prompt, "max_tokens": 12, "temperature": 0} for prompt in PROMPTS]
    requests.append({"prompt": ["Hello there", "Why"], "max_tokens": 12, "temperature": 0})  # two prompts, one request
    alone = [gpt2.post("/v1/completions", json=request).json() for request in requests]
    stop = alone[0]["choices"][0]["text"][3:6]
    requests.append({"prompt": PROMPTS[0], "max_tokens": 12, "temperature": 0, "stop": [stop]})
    alone.append(gpt2.post("/v1/completions", json=requests[-1]).json())
    assert alone[-1]["choices"][0]["finish_reason"] == "stop" and stop not in alone[-1]["choices"][0]["text"]
    assert len({a["choices"][0]["text"] for a in alone[: len(PROMPTS)]}) == len(PROMPTS)  # the texts differ

    results, batches = concurrently(gpt2, requests)
    assert batches == {len(requests): 1}  # 10 requests, 11 prompts: one model call
    for (status, batched), expected in zip(results, alone):
        assert status == 200, batched
        assert batched["choices"] == expected["choices"] and batched["usage"] == expected["usage"]


def test_requests_with_other_settings_a_seed_or_a_stream_are_not_batched_together(gpt2):
    greedy = {"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0}
    requests = [
        greedy, {**greedy, "prompt": "Tom"},  # one batch
        {**greedy, "max_tokens": 9},  # another length: alone
        {"prompt": "Once", "max_tokens": 8, "temperature": 0.8}, {"prompt": "Tom", "max_tokens": 8, "temperature": 0.8},  # one batch
        {"prompt": "Once", "max_tokens": 8, "temperature": 0.7},  # another temperature: alone
        {"prompt": "Once", "max_tokens": 8, "temperature": 0.8, "seed": 5},  # its text must repeat with its seed: alone
        {**greedy, "prompt": "Sue"},  # streamed piece by piece: alone
    ]
    alone = {i: gpt2.post("/v1/completions", json=requests[i]).json()["choices"] for i in (0, 1, 2, 6)}
    results, batches = concurrently(gpt2, requests, streamed=(7,))
    assert batches == {2: 2, 1: 4}
    assert all(status == 200 for status, _ in results), results
    assert {i: results[i][1]["choices"] for i in alone} == alone
    assert results[7][1].rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in results[7][1].replace(" ", "")


def test_the_queue_limit_still_holds_with_batching(gpt2_dir):
    with client_for(gpt2_dir, max_queue=3, max_batch_size=16) as client:
        expected = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4}).json()["choices"]
        results: list = [None, None]

        def send(i: int) -> None:
            results[i] = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4}).json()["choices"]

        with held(client) as engine:
            threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            while engine.worker.waiting < 3:
                time.sleep(0.02)
            busy = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
            assert busy.status_code == 503 and "hftk serve --max-queue" in busy.json()["error"]["message"]
            assert client.get("/health").json()["queued"] == 3
        for thread in threads:
            thread.join(60)
        assert results == [expected, expected]
        assert client.get("/health").json()["batches"] == {"1": 2, "2": 1}


def test_the_max_batch_size_option_reaches_the_server(gpt2_dir, cli, monkeypatch):
    from hf_toolkit.serving import server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda model, **kwargs: seen.update(kwargs))
    assert cli("serve", gpt2_dir, "--max-batch-size", "4").exit_code == 0
    assert seen["limits"].max_batch_size == 4
    assert "--max-batch-size" in cli("serve", "--help").stdout
    refused = cli("serve", gpt2_dir, "--max-batch-size", "0")
    assert refused.exit_code == 2 and "--max-batch-size" in refused.stderr


def test_task_endpoints_batch_and_one_bad_input_fails_only_its_request(tmp_path_factory):
    classifier = build_bert(tmp_path_factory.mktemp("batching") / "tiny-classifier", "classifier")
    texts = ["a good film", "bad", "it was fine, I suppose, for a rainy afternoon", "no"]
    with client_for(classifier) as client:
        alone = [client.post("/v1/classify", json={"text": text}).json()["data"] for text in texts]
        engine = engine_of(client)
        results: list = [None] * len(texts)

        def send(i: int) -> None:
            results[i] = client.post("/v1/classify", json={"text": texts[i]}).json()["data"]

        with held(client):
            threads = [threading.Thread(target=send, args=(i,)) for i in range(len(texts))]
            for thread in threads:
                thread.start()
            while engine.worker.waiting < len(texts) + 1:
                time.sleep(0.02)
        for thread in threads:
            thread.join(60)
        assert same_records(results, alone) and engine.worker.batches[len(texts)] == 1

    masked = build_bert(tmp_path_factory.mktemp("batching") / "tiny-mlm", "mlm")
    with client_for(masked) as client:
        texts = ["the [MASK] sat down", "no mask here", "a [MASK] day"]
        alone = {i: client.post("/v1/fill-mask", json={"text": texts[i], "top_k": 3}).json()["data"] for i in (0, 2)}
        engine = engine_of(client)
        responses: list = [None] * len(texts)

        def fill(i: int) -> None:
            responses[i] = client.post("/v1/fill-mask", json={"text": texts[i], "top_k": 3})

        with held(client):
            threads = [threading.Thread(target=fill, args=(i,)) for i in range(len(texts))]
            for thread in threads:
                thread.start()
            while engine.worker.waiting < len(texts) + 1:
                time.sleep(0.02)
        for thread in threads:
            thread.join(60)
        assert responses[1].status_code == 400 and "[MASK]" in responses[1].json()["error"]["message"]
        assert same_records({i: responses[i].json()["data"] for i in (0, 2)}, alone)


def test_a_long_stream_does_not_hold_up_a_short_request_and_seeded_texts_repeat_interleaved(gpt2):
    """Queued together, a 35-token stream and a 2-token request take turns: the short one ends first; a seeded
    sampling stream and a seeded request interleaved with it give the texts each gets alone."""
    long = {"prompt": "Once upon a time", "max_tokens": 35, "temperature": 0.9, "seed": 1}
    short = {"prompt": "Hi", "max_tokens": 2, "temperature": 0.9, "seed": 2}
    alone = {name: gpt2.post("/v1/completions", json=request).json()["choices"][0]["text"]
             for name, request in (("long", long), ("short", short))}
    finished: list[str] = []
    texts: dict[str, str] = {}

    def send_long() -> None:
        with gpt2.stream("POST", "/v1/completions", json={**long, "stream": True}) as response:
            texts["long"] = "".join(c["choices"][0]["text"] for c in events(response))
        finished.append("long")

    def send_short() -> None:
        texts["short"] = gpt2.post("/v1/completions", json=short).json()["choices"][0]["text"]
        finished.append("short")

    engine = engine_of(gpt2)
    with held(gpt2):
        threads = [threading.Thread(target=send_long)]
        threads[0].start()
        while engine.worker.waiting < 2:
            time.sleep(0.02)
        threads.append(threading.Thread(target=send_short))
        threads[1].start()
        while engine.worker.waiting < 3:
            time.sleep(0.02)
    for thread in threads:
        thread.join(60)
    assert finished == ["short", "long"] and texts == alone


def test_every_request_has_a_time_limit_queued_streamed_or_running(gpt2_dir):
    from hf_toolkit.serving.engine import Generation

    with client_for(gpt2_dir, request_timeout=0.5) as client:
        engine = engine_of(client)
        results: list = [None, None]

        def send(i: int) -> None:
            if i == 0:
                results[0] = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 4})
            else:
                with client.stream("POST", "/v1/completions", json={"prompt": "Hi", "max_tokens": 4, "stream": True}) as response:
                    results[1] = (response.status_code, "".join(response.iter_text()))

        with held(client):
            threads = [threading.Thread(target=send, args=(i,)) for i in range(2)]
            for thread in threads:
                thread.start()
            time.sleep(1.0)  # both wait past their 0.5 s
        for thread in threads:
            thread.join(60)
        assert results[0].status_code == 504
        message = results[0].json()["error"]["message"]
        assert "time limit of 0.5 s (hftk serve --request-timeout sets it)" in message
        status, stream = results[1]
        assert status == 200 and "time limit of 0.5 s" in stream and stream.rstrip().endswith("data: [DONE]")
        # a generation that runs past its deadline stops at its next step, with the same error
        request = Generation(engine.prepare(["Once upon a time"], {"max_new_tokens": 40}, seed=None), [], time.monotonic())
        [outcome] = engine.generate_batch([request])
        assert request.halted_by == "timeout" and "time limit of 0.5 s" in str(outcome)
        assert client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 2}).status_code == 200


def test_serve_options_reach_the_limits(gpt2_dir, cli, monkeypatch):
    from hf_toolkit.serving import server

    seen = {}
    monkeypatch.setattr(server, "serve", lambda model, **kwargs: seen.update(kwargs))
    assert cli("serve", gpt2_dir, "--request-timeout", "30", "--max-running", "2").exit_code == 0
    assert (seen["limits"].request_timeout, seen["limits"].max_running) == (30, 2)
    assert cli("serve", gpt2_dir).exit_code == 0 and seen["limits"].request_timeout == 120


def test_every_limit_is_a_serve_option_and_its_refusal_names_that_option(gpt2_dir, cli, monkeypatch):
    from hf_toolkit.serving import server
    from hf_toolkit.serving.limits import Limits, check

    seen = {}
    monkeypatch.setattr(server, "serve", lambda model, **kwargs: seen.update(kwargs))
    assert cli("serve", gpt2_dir, "--max-n", "3", "--max-top-k", "7", "--max-tokens-limit", "9").exit_code == 0
    limits = seen["limits"]
    assert (limits.n, limits.top_k, limits.max_tokens) == (3, 7, 9)
    usage = cli("serve", "--help").stdout
    for bound in Limits.bounds():
        assert limits.source(bound).startswith("hftk serve --") and limits.source(bound)[len("hftk serve "):] in usage
    with pytest.raises(ApiError, match=r"n: 4 is over this server's limit of 3 \(hftk serve --max-n sets it\)"):
        check(limits, "n", 4)
    with pytest.raises(ApiError, match=r"n: 4 is over this server's limit of 3 \(Limits.n sets it\)"):
        check(Limits(n=3), "n", 4)  # Limits a program builds: the bound named by its field
