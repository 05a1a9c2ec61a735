"""The queue in front of the model and the scheduler that takes turns on it: what runs when, never how.

Requests wait in a queue (at most ``max_queue``, queued or running; more get 503). One daemon
thread (:class:`Worker`) owns the model's time. When it may start more work it takes the oldest
waiting job and, if that job may share a batch, every later waiting job with the same batch key,
up to ``max_batch_size`` sequences (or inputs) in all, and starts them as one call. Each call runs
on a thread of its own (:class:`Lane`) but only when the worker gives it the turn: a call that
takes its steps through :meth:`Worker.turn` (a generation does, between decoding steps) hands the
model back after every step, and the worker gives the next turn to the next call in the ring. So
up to ``max_running`` calls, streamed or not, advance token by token side by side, and a request
that arrives while a long one runs starts at the next step instead of waiting for its end. A call
that never takes turns (a prediction batch) runs to its end in one turn.

Only one lane runs at a time, so the model never sees two threads at once; each lane keeps its own
random state across turns (saved when it hands the model back, restored when it gets it again), so
a seeded sampling request gives the text it gives alone however it is interleaved.

A job whose client has gone (its future cancelled) or whose deadline has passed is dropped before
it starts. If a batch fails, each of its jobs is run again alone, so one bad request fails only
itself. ``Worker.batches`` counts the calls by jobs per call. :meth:`Worker.stop` fails the jobs
still queued (503) and lets the running calls end (the engine halts them).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

from hf_toolkit.serving.errors import ApiError


class Cancelled(Exception):
    """The client went away: its job is not run (or its generation stopped)."""


@dataclass
class Job:
    """Work queued for the model: `item`, run through `run` alone or with later jobs of the same `key`."""

    item: Any
    run: Callable[[list[Any]], list[Any]]  # items -> one result per item, in order (an exception instance fails that item)
    key: Hashable | None  # jobs with equal keys may run as one batch; None: always alone
    size: int  # sequences (or inputs) it adds to a batch
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    deadline: float | None = None  # time.monotonic() after which it is not started
    expired: Callable[[], Exception] | None = None  # the error of a job dropped at its deadline


class Lane:
    """One call (a batch of jobs) on a thread of its own that runs only while the worker gives it the turn."""

    def __init__(self, worker: Worker, batch: list[Job]):
        self.worker, self.batch, self.ended = worker, batch, False
        self._go, self._back = threading.Semaphore(0), threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, name="hftk-serve-call", daemon=True)
        self._thread.start()

    def step(self) -> bool:
        """(Worker thread) let the call run until it hands the model back or ends; True when it has ended."""
        self._go.release()
        self._back.acquire()
        return self.ended

    def pause(self) -> None:
        """(Lane thread) hand the model back to the worker and wait for the next turn, keeping this call's random state."""
        state = random_state()
        self._back.release()
        self._go.acquire()
        restore_random_state(state)

    def _main(self) -> None:
        self.worker.lanes.current = self
        self._go.acquire()
        try:
            self.worker.run(self.batch)
        finally:
            self.ended = True
            self._back.release()


class Worker:
    """The queue and the thread that takes jobs from it, oldest first, and gives running calls their turns.

    Counts the requests queued or running (`waiting`) and the calls by how many requests each ran
    (`batches`).
    """

    def __init__(self, max_queue: int, max_batch_size: int = 1, max_running: int = 1, *,
                 queue_set_by: str = "Limits.max_queue"):
        self.max_queue, self.max_batch_size, self.max_running, self.waiting = max_queue, max_batch_size, max_running, 0
        self.queue_set_by = queue_set_by  # what sets max_queue, as the 503 names it
        self.lanes = threading.local()  # .current: the Lane of the calling thread
        self._batches: Counter[int] = Counter()
        self._jobs: deque[Job] = deque()
        self._ready = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="hftk-serve-model", daemon=True)
        self._thread.start()

    def turn(self) -> None:
        """Called by a running call between its steps: others take a step, then it goes on."""
        lane = getattr(self.lanes, "current", None)
        if lane is not None:
            lane.pause()

    def _loop(self) -> None:
        running: list[Lane] = []
        while True:
            with self._ready:
                while not self._jobs and not running and not self._stopped:
                    self._ready.wait()
                if self._stopped:
                    self._fail_queued()
                    if not running:
                        return
                batch = self._take() if self._jobs and len(running) < self.max_running else []
            if batch:
                self._count(len(batch))
                running.append(Lane(self, batch))
            running = [lane for lane in running if not lane.step()]

    def _fail_queued(self) -> None:
        left, self._jobs = list(self._jobs), deque()
        for job in left:
            _hand(job, _settle, job.future, False, ApiError(503, "the server is stopping; retry when it is back",
                                                             kind="server_busy"))

    def _take(self) -> list[Job]:
        """The oldest live job and the later live jobs of its key, up to max_batch_size in size (lock held)."""
        head = self._jobs.popleft()
        if self._dropped(head):
            return []
        batch, total = [head], head.size
        if head.key is not None:
            for job in list(self._jobs):
                if total >= self.max_batch_size:
                    break
                if self._dropped(job):
                    self._jobs.remove(job)
                elif job.key == head.key and total + job.size <= self.max_batch_size:
                    self._jobs.remove(job)
                    batch.append(job)
                    total += job.size
        return batch

    @staticmethod
    def _dropped(job: Job) -> bool:
        """Whether `job` is not to run: its client has gone, or its deadline passed while it waited (it is told so)."""
        if job.future.done():
            return True
        if job.deadline is not None and time.monotonic() > job.deadline:
            _hand(job, _settle, job.future, False, job.expired() if job.expired else TimeoutError())
            return True
        return False

    @property
    def batches(self) -> Counter[int]:
        """The calls so far by requests per call (a copy)."""
        with self._ready:
            return self._batches.copy()

    def _count(self, requests: int) -> None:
        with self._ready:
            self._batches[requests] += 1

    def run(self, batch: list[Job]) -> None:
        """(A lane's thread) run the batch and settle each job's future with its result or error."""
        try:
            results = batch[0].run([job.item for job in batch])
            outcomes = [(not isinstance(result, BaseException), result) for result in results]
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting requests
            if len(batch) == 1:
                outcomes = [(False, error)]
            else:  # one request may have failed the batch: run each alone, so only it fails
                outcomes = [self._alone(job) for job in batch]
        for job, (ok, outcome) in zip(batch, outcomes):
            _hand(job, _settle, job.future, ok, outcome)

    def _alone(self, job: Job) -> tuple[bool, Any]:
        if job.future.done():
            return False, Cancelled()
        self._count(1)
        try:
            [result] = job.run([job.item])
            return not isinstance(result, BaseException), result
        except BaseException as error:  # noqa: BLE001 - handed to the awaiting request
            return False, error

    def start(self, fn: Callable[[], Any]) -> asyncio.Future:
        """Queue `fn` to run alone (503 when the queue is full); the future settles when it has run."""
        return self.start_batch(fn, _call, key=None, size=1)

    def start_batch(self, item: Any, run: Callable[[list[Any]], list[Any]], *, key: Hashable | None, size: int,
                    deadline: float | None = None, expired: Callable[[], Exception] | None = None) -> asyncio.Future:
        """Queue `item` for ``run([item, ...])`` (503 when the queue is full); the future settles with its result.

        Cancelling the future (its client has gone) drops the job if it has not started; so does
        `deadline` passing, with the error `expired()`.
        """
        if self.waiting >= self.max_queue:
            raise ApiError(503, f"server busy: {self.waiting} requests are queued for the model, this server's limit "
                                f"({self.queue_set_by} sets it); retry later", kind="server_busy")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.waiting += 1
        future.add_done_callback(self._done)
        with self._ready:
            self._jobs.append(Job(item, run, key, size, future, loop, deadline, expired))
            self._ready.notify()
        return future

    def _done(self, _future) -> None:
        self.waiting -= 1

    def stop(self) -> None:
        """Take no more jobs: those still queued get 503; the running calls end (the engine halts them)."""
        with self._ready:
            self._stopped = True
            self._ready.notify()


def random_state() -> Any:
    """The random state sampling draws from (torch's CPU generator, and CUDA's when in use)."""
    import torch

    return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None)


def restore_random_state(state: Any) -> None:
    import torch

    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def _call(fns: list[Callable[[], Any]]) -> list[Any]:
    return [fns[0]()]


def _hand(job: Job, callback: Callable[..., Any], *args: Any) -> None:
    """Run `callback(*args)` on the job's event loop (unless that loop has closed: the server stopped)."""
    try:
        job.loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass


def _settle(future: asyncio.Future, ok: bool, outcome: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
