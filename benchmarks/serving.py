"""The serving rows: a real ``hftk serve`` under 1, 8 and 32 concurrent clients, batched vs one request at a time.

Two servers of the same run are started as subprocesses (``python -m hf_toolkit serve``, as a user
starts it): one batching (``--max-batch-size`` at its default) and one with
``--max-batch-size 1`` (one request at a time, the server before batching). For each number of
clients, each client thread sends greedy ``/v1/completions`` requests one after another over its
own keep-alive connection, the same prompts in the same order on both servers, the two servers
taking turns. A row reports completions/s (requests / wall time) and the p50 / p99 request latency
(queueing included) on each side; its ratio is batched completions/s over unbatched. The note says
in how many model calls the batched server ran the requests (its ``/health`` counts its model calls
by requests per call) and whether every completion's text was the same on both servers (greedy
decoding: it must be).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from benchmarks.rows import (
    CAUSAL_RECIPE,
    GPT2_TOKENIZER,
    REPO,
    STORIES,
    Row,
    _hftk_finetune,
    _prompts,
    needs,
)

CLIENTS = (1, 8, 32)
NEW_TOKENS = 16
# One client: the same work on both servers (goal: no slowdown beyond noise). More clients: what the
# waiting requests share; a closed loop of 8 clients tends to split into batches of about 1 and 7
# (a batch runs to its end; whoever arrives meanwhile waits for the next).
GOALS = {1: ">= 0.95x", 8: ">= 2x", 32: ">= 3x"}


def serving(work: Path, quick: bool, state: dict) -> list[Row]:
    from hf_toolkit.errors import HftkError
    from hf_toolkit.serving.limits import Limits
    from hf_toolkit.serving.server import check_available

    names = {c: f"hftk serve: completions/s and p50/p99 latency, {c} concurrent client{'s' if c > 1 else ''}, batched "
                f"(--max-batch-size {Limits().max_batch_size}) vs 1 (greedy, {NEW_TOKENS} new tokens)" for c in CLIENTS}
    try:
        check_available()
    except HftkError as error:
        return [Row(names[c], goal=GOALS[c], skipped=str(error)) for c in CLIENTS]
    run = state.get("causal_run")
    if run is None:
        if (reason := needs(GPT2_TOKENIZER)) is not None:
            return [Row(names[c], goal=GOALS[c], skipped=reason) for c in CLIENTS]
        recipe = CAUSAL_RECIPE.format(tokenizer=GPT2_TOKENIZER, stories=STORIES, out="{out}", steps=3)
        run = _hftk_finetune(recipe, work)[1]
        state["causal_run"] = run
    # clients -> (rounds, requests per client and round). The servers take turns round by round, so a change
    # in the machine's load hits both sides; one client gets short rounds, its ratio being the closest
    # call. The full run has enough requests for a p99 at 8 and 32 clients; quick is a first look.
    plan = {1: (6, 1), 8: (3, 1), 32: (2, 1)} if quick else {1: (10, 3), 8: (4, 3), 32: (3, 2)}
    prompts = _prompts(64)
    batched, single = Server(run, work, []), Server(run, work, ["--max-batch-size", "1"])
    rows = []
    try:
        for server in (batched, single):
            server.wait()
            server.measure(2, 2, prompts)  # warm-up: the first calls of a fresh process are slow
        for clients in CLIENTS:
            calls_before = batched.calls()
            ours, theirs = [], []
            rounds, per_client = plan[clients]
            for first in range(0, rounds * clients * per_client, clients * per_client):
                ours.append(batched.measure(clients, per_client, prompts, first))
                theirs.append(single.measure(clients, per_client, prompts, first))
            calls = batched.calls() - calls_before
            ours, theirs = Measured.joined(ours), Measured.joined(theirs)
            same = sum(a == b for a, b in zip(ours.texts, theirs.texts))
            note = (f"{len(ours.texts)} requests per side ({rounds} round{'s' if rounds > 1 else ''}), run by the batched "
                    f"server in {sum(calls.values())} model calls of up to {max(calls)}; "
                    f"texts equal on both servers: {same}/{len(ours.texts)}")
            rows.append(Row(names[clients], ours.describe(), theirs.describe(), ours.rate / theirs.rate, GOALS[clients], note))
    finally:
        batched.stop()
        single.stop()
    return rows


class Measured:
    """Request latencies (s) and completion texts of one side, over `seconds` of wall time."""

    def __init__(self, seconds: float, latencies: list[float], texts: list[str]):
        self.seconds, self.latencies, self.texts = seconds, sorted(latencies), texts
        self.rate = len(latencies) / seconds

    @classmethod
    def joined(cls, parts: list[Measured]) -> Measured:
        return cls(sum(p.seconds for p in parts), [t for p in parts for t in p.latencies], [t for p in parts for t in p.texts])

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile, in ms."""
        return 1000 * self.latencies[max(0, math.ceil(q * len(self.latencies)) - 1)]

    def describe(self) -> str:
        return f"{self.rate:.1f} completions/s, p50 {self.percentile(0.5):.0f} ms, p99 {self.percentile(0.99):.0f} ms"


class Server:
    """``hftk serve RUN`` in a subprocess on a free port, its output (uvicorn's access log) in a file under `work`."""

    def __init__(self, run: Path, work: Path, options: list[str]):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1"}
        self.log = work / f"serve-{self.port}.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hf_toolkit", "serve", str(run), "--port", str(self.port), "--max-queue", "1000",
                 *options], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"hftk serve exited {self.process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if self.health()["status"] == "ok":
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"hftk serve did not answer /health in {seconds:.0f} s")

    def health(self) -> dict:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            return json.loads(connection.getresponse().read())
        finally:
            connection.close()

    def calls(self) -> Counter[int]:
        """The server's model calls so far, by requests per call."""
        return Counter({int(size): count for size, count in self.health()["batches"].items()})

    def measure(self, clients: int, per_client: int, prompts: list[str], first: int = 0) -> Measured:
        """`clients` threads, each sending `per_client` completions one after another (client i's j-th: prompt
        first + i * per_client + j, cycling)."""
        latencies: list[list[float]] = [[] for _ in range(clients)]
        texts: list[str] = [""] * (clients * per_client)
        errors: list[str] = []
        start = threading.Barrier(clients + 1)

        def client(i: int) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            start.wait()
            try:
                for j in range(per_client):
                    n = i * per_client + j
                    body = json.dumps({"prompt": prompts[(first + n) % len(prompts)], "max_tokens": NEW_TOKENS, "temperature": 0})
                    sent = time.perf_counter()
                    connection.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
                    response = connection.getresponse()
                    payload = response.read()
                    latencies[i].append(time.perf_counter() - sent)
                    if response.status != 200:
                        errors.append(f"HTTP {response.status}: {payload[:300]!r}")
                        return
                    texts[n] = json.loads(payload)["choices"][0]["text"]
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        seconds = time.perf_counter() - began
        if errors:
            raise RuntimeError(f"hftk serve on port {self.port} failed a request: {errors[0]}")
        return Measured(seconds, [t for per in latencies for t in per], texts)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
