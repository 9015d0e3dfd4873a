"""One load level on one event loop: requests sent as the profile says, every one stored.

Closed loop: ``streams`` tasks, each sending its next request when the last one ends.
Open loop: each request launched at its scheduled instant whatever else is in flight (how
late it left is its send lag). Every request goes to the replica with the fewest requests
in flight (ties in turn). A level ends after its duration (requests still in flight are
cancelled and stored as ``cancelled``) or when its last counted request has ended.

Rows are handed to ``emit`` in batches as they land (every 0.5 s or 200 rows), so a killed
run keeps them. Times are seconds from ``t0``, an absolute ``time.perf_counter()`` value
that every worker process shares (CLOCK_MONOTONIC on Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kurabe.backends.base import Backend
from kurabe.client import ChatClient
from kurabe.load.prompts import LoadPrompt
from kurabe.load.selfcheck import (
    IN_FLIGHT_EVERY_S,
    LoopLagMonitor,
    Starver,
    process_cpu_s,
)
from kurabe.metrics import speed_metrics
from kurabe.records import ChatRequest, Endpoint, LoadRequestRow, StreamRecord

FLUSH_EVERY_S = 0.5
# Finished requests are turned into rows (their stream serialised, their metrics computed:
# ~0.2 ms each) by the flusher, this many between two turns of the event loop, never in the
# burst of requests that end and start together.
ROWS_PER_TURN = 16


@dataclass
class WorkerJob:
    """One worker's share of a level (picklable: it crosses to worker processes)."""

    model: str
    level: int
    worker: int
    workers: int
    open_loop: bool
    streams: int = 0  # closed loop: streams this worker holds
    arrivals_s: list[float] = field(default_factory=list)  # open loop: its scheduled sends
    max_requests: int | None = None  # closed loop with a request count: this worker's share
    warmup_s: float = 0.0
    warmup_requests: int = 0  # this worker's share
    end_s: float | None = None  # the level's end (duration), from t0; None: count-based
    drain_s: float = 0.0
    prompts: list[LoadPrompt] = field(default_factory=list)
    request: dict[str, Any] = field(default_factory=dict)  # ChatRequest fields, no messages
    client_limits: dict[str, Any] = field(default_factory=dict)  # ChatClient keywords


@dataclass
class WorkerResult:
    """What a worker saw of itself during the level (``LoadLevelRow.client`` pools these)."""

    worker: int
    cpu_s: float
    loop_lags_s: list[float]
    send_lags_s: list[float]
    in_flight: list[tuple[int, int]]  # (tick index of IN_FLIGHT_EVERY_S from t0, n)
    max_in_flight: int
    counts: dict[str, int]  # sent, ok, error, cancelled
    end_s: float  # when its last request ended, from t0


# Streams per connection pool. One: each request in flight has a pool (and a connection) of
# its own, reused by the next request once it ends. Requests sharing a pool queue inside it
# (measured: 64 streams over 2 pools reached the server spread over ~0.4 s, 10 ms apart per
# pool; with a pool each, within 14 ms), and that queueing would land in their TTFT.
POOL_STREAMS = 1
WARM_BATCH = 64  # connections opened at once before a level


class Replica:
    """One base URL of a model with its in-flight count and its connection pools (each a
    ``ChatClient``, made as the requests in flight need them)."""

    def __init__(self, backend: Backend, limits: dict[str, Any]) -> None:
        self.backend = backend
        self.url = backend.endpoint.base_url
        self.limits = limits
        self.pools: list[tuple[ChatClient, list[int]]] = []  # (client, [in flight])
        self.in_flight = 0

    def pool(self) -> tuple[ChatClient, list[int]]:
        """The pool with the fewest requests in flight, or a new one when all are full."""
        if self.pools:
            best = min(self.pools, key=lambda p: p[1][0])
            if best[1][0] < POOL_STREAMS:
                return best
        made = (ChatClient(self.backend, **self.limits), [0])
        self.pools.append(made)
        return made

    async def open_pools(self, n: int) -> None:
        """Make ``n`` pools, each with its connection open, before the level starts: the
        first requests then pay no TCP connect inside their TTFT (as the later ones, on
        reused connections, do not)."""
        made = [(ChatClient(self.backend, **self.limits), [0]) for _ in range(n)]
        for i in range(0, n, WARM_BATCH):
            await asyncio.gather(*(c.open_connection() for c, _ in made[i:i + WARM_BATCH]))
        self.pools += made

    async def aclose(self) -> None:
        for client, _ in self.pools:
            await client.aclose()


class ReplicaBackend(Backend):
    """A model's backend at another base URL: same dialect, another replica."""

    kind = "replica"

    def __init__(self, dialect: Backend, endpoint: Endpoint) -> None:
        self.dialect = dialect
        self.name = dialect.name
        self._endpoint = endpoint

    @classmethod
    def from_config(cls, model, resolved, log_dir):
        raise NotImplementedError("a replica is made from its model's backend")

    def start(self) -> Endpoint:
        return self._endpoint

    def info(self):
        return self.dialect.info()

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    def alive(self) -> bool:
        return self.dialect.alive()

    def transport(self):
        return self.dialect.transport()

    def request_body(self, req: ChatRequest) -> dict[str, Any]:
        body = self.dialect.request_body(req)
        if self._endpoint.model_id:
            body["model"] = self._endpoint.model_id
        return body


def replicas_of(backend: Backend, urls: list[str], limits: dict[str, Any]) -> list[Replica]:
    """A replica per base URL (``urls`` empty: the backend's own endpoint only)."""
    if not urls:
        return [Replica(backend, limits)]
    ep = backend.endpoint
    return [Replica(backend if url.rstrip("/") == ep.base_url.rstrip("/") else
                    ReplicaBackend(backend, Endpoint(_base_url(url), ep.model_id, ep.api_key)),
                    limits) for url in urls]


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class _Picker:
    """The replica with the fewest requests in flight; ties taken in turn."""

    def __init__(self, replicas: list[Replica]) -> None:
        self.replicas = replicas
        self._turn = itertools.count()

    def pick(self) -> Replica:
        least = min(r.in_flight for r in self.replicas)
        tied = [r for r in self.replicas if r.in_flight == least]
        return tied[next(self._turn) % len(tied)]


class LevelRunner:
    """Runs one ``WorkerJob`` on the running loop."""

    def __init__(self, job: WorkerJob, replicas: list[Replica], t0: float,
                 emit: Callable[[list[LoadRequestRow]], None]) -> None:
        self.job = job
        self.picker = _Picker(replicas)
        self.t0 = t0
        self.emit = emit
        self._finished: list[tuple[Any, ...]] = []  # requests not yet made into rows
        self._rows: list[LoadRequestRow] = []  # rows not yet stored
        self._sent = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._counts = {"sent": 0, "ok": 0, "error": 0, "cancelled": 0}
        self._send_lags: list[float] = []
        self._samples: list[tuple[int, int]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def now_s(self) -> float:
        return time.perf_counter() - self.t0

    async def run(self) -> WorkerResult:
        job = self.job
        starver = Starver.from_env()
        lag = LoopLagMonitor()
        cpu0 = process_cpu_s()
        await self._sleep_until(0.0)
        lag.start()
        if starver:
            starver.start()
        flusher = asyncio.create_task(self._flush_loop())
        sampler = asyncio.create_task(self._sample_loop())
        try:
            sending = asyncio.create_task(
                self._open_loop() if job.open_loop else self._closed_loop())
            if job.end_s is None:
                await sending
            else:
                await self._sleep_until(job.end_s)
                self._stopping = True  # no new request; those in flight may drain
                if job.drain_s:
                    await asyncio.wait({sending, *self._tasks}, timeout=job.drain_s)
                sending.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sending
            await self._cancel_in_flight()
        finally:
            for task in (flusher, sampler):
                task.cancel()
            await asyncio.gather(flusher, sampler, return_exceptions=True)
            await lag.stop()
            if starver:
                starver.stop()
            self._flush()
        return WorkerResult(worker=job.worker, cpu_s=process_cpu_s() - cpu0,
                            loop_lags_s=lag.lags_s, send_lags_s=self._send_lags,
                            in_flight=self._samples, max_in_flight=self._max_in_flight,
                            counts=dict(self._counts), end_s=self.now_s())

    async def _sleep_until(self, t_s: float) -> None:
        # uvloop's timers have millisecond resolution and may fire up to 1 ms early: sleep
        # again for what is left, so nothing is ever sent before its time.
        while (delay := t_s - self.now_s()) > 0:
            await asyncio.sleep(delay)

    # -- profiles --------------------------------------------------------------------------

    async def _closed_loop(self) -> None:
        async def stream() -> None:
            while self._take_slot():
                await self._send(None)

        await asyncio.gather(*(stream() for _ in range(self.job.streams)))

    def _take_slot(self) -> bool:
        limit = self.job.max_requests
        if self._stopping:
            return False
        if limit is not None and self._sent >= limit:
            return False
        self._sent += 1
        return True

    async def _open_loop(self) -> None:
        for scheduled in self.job.arrivals_s:
            await self._sleep_until(scheduled)
            if self._stopping:
                break
            self._sent += 1
            task = asyncio.create_task(self._send(scheduled))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self.job.end_s is None and self._tasks:
            await asyncio.wait(set(self._tasks))

    # -- one request -----------------------------------------------------------------------

    async def _send(self, scheduled_s: float | None) -> None:
        job = self.job
        n = self._counts["sent"]
        index = n * job.workers + job.worker  # this request's number in the level
        prompt = job.prompts[index % len(job.prompts)].variant(index // len(job.prompts))
        req = ChatRequest(messages=prompt.messages, **job.request)
        replica = self.picker.pick()
        client, pool_in_flight = replica.pool()
        pool_in_flight[0] += 1
        replica.in_flight += 1
        self._in_flight += 1
        self._max_in_flight = max(self._max_in_flight, self._in_flight)
        self._counts["sent"] += 1
        sent_s = self.now_s()
        sent_unix = time.time()
        if scheduled_s is not None:
            self._send_lags.append(max(0.0, sent_s - scheduled_s))
        warmup = sent_s < job.warmup_s or n < job.warmup_requests
        current = asyncio.current_task()
        if current is not None and scheduled_s is None:
            self._tasks.add(current)
        record: StreamRecord | None = None
        try:
            record = await client.stream_chat(req)
        finally:
            pool_in_flight[0] -= 1
            replica.in_flight -= 1
            self._in_flight -= 1
            if current is not None:
                self._tasks.discard(current)
            if record is None:  # cancelled at the level's end
                record = StreamRecord(sent_at_unix_s=sent_unix, error_kind="cancelled",
                                      error="still in flight when the level ended",
                                      t_done_s=self.now_s() - sent_s)
            self._store(prompt, req, replica, record, sent_s, scheduled_s, warmup)

    def _store(self, prompt: LoadPrompt, req: ChatRequest, replica: Replica,
               record: StreamRecord, sent_s: float, scheduled_s: float | None,
               warmup: bool) -> None:
        status = ("cancelled" if record.error_kind == "cancelled" else
                  "error" if record.error else "ok")
        self._counts[status] += 1
        self._finished.append((prompt, req, replica, record, sent_s, scheduled_s, warmup,
                               status))

    async def _cancel_in_flight(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- background ------------------------------------------------------------------------

    def _row(self, prompt: LoadPrompt, req: ChatRequest, replica: Replica,
             record: StreamRecord, sent_s: float, scheduled_s: float | None, warmup: bool,
             status: str) -> LoadRequestRow:
        return LoadRequestRow(
            model=self.job.model, level=self.job.level, status=status, endpoint=replica.url,
            prompt_id=prompt.id, sent_s=sent_s, sent_at_unix_s=record.sent_at_unix_s,
            warmup=warmup, scheduled_s=scheduled_s, worker=self.job.worker,
            error=record.error, error_kind=record.error_kind if record.error else None,
            request=req.to_dict(),
            record=record.to_dict(), metrics=speed_metrics(record).to_dict())

    def _convert(self) -> None:
        """The oldest finished requests (up to ROWS_PER_TURN) made into rows."""
        batch = self._finished[:ROWS_PER_TURN]
        del self._finished[:ROWS_PER_TURN]
        self._rows += [self._row(*f) for f in batch]

    def _emit_rows(self) -> None:
        if self._rows:
            rows, self._rows = self._rows, []
            self.emit(rows)

    def _flush(self) -> None:
        """Every finished request, as rows, stored now."""
        while self._finished:
            self._convert()
        self._emit_rows()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY_S)
            while self._finished:
                self._convert()
                await asyncio.sleep(0)
            self._emit_rows()

    async def _sample_loop(self) -> None:
        for tick in itertools.count():
            await self._sleep_until(tick * IN_FLIGHT_EVERY_S)
            self._samples.append((tick, self._in_flight))


async def open_pools(job: WorkerJob, replicas: list[Replica]) -> None:
    """Open the connections a closed-loop job's streams will use, spread over the replicas as
    the picker will spread the first requests (open loop: pools are made as arrivals need
    them, so a first request there may pay its connect)."""
    if job.open_loop or not job.streams:
        return
    for i, replica in enumerate(replicas):
        await replica.open_pools(len(range(i, job.streams, len(replicas))))


async def run_worker(job: WorkerJob, replicas: list[Replica], t0: float,
                     emit: Callable[[list[LoadRequestRow]], None]) -> WorkerResult:
    """Run ``job`` against ``replicas``; the replicas' clients are closed afterwards."""
    try:
        return await LevelRunner(job, replicas, t0, emit).run()
    finally:
        for r in replicas:
            await r.aclose()
