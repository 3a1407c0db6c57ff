"""One engine shared by many callers: the server's requests, its batch jobs and live streams.

    submit(input) ─► admission ─► engine lanes ─► one scheduler ─► runners ─► future per input
                     (bounded     (urgent: next    (segments of every
                      per lane)    free worker;     caller pooled, most
                                   bulk: backlog)   urgent batched first)

Every caller's segments meet in the same scheduler, so concurrent users are batched together
instead of taking turns on the model. Work is admitted only while the lane has room: a full
lane answers ``OverloadedError`` (the server turns it into 429/503 with Retry-After) rather than
queueing without bound.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass

from zhuanxie.engine import AudioInput, Engine, InputResult, Run

CANCELLED = "cancelled"
CLOSED = "the service closed before this input was transcribed"


class OverloadedError(RuntimeError):
    """The lane is full; try again after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class ServiceOptions:
    max_urgent: int = 32
    """Inputs of priority > 0 (interactive requests, live streams) admitted and unfinished."""
    max_bulk: int = 100_000
    """Bulk inputs (priority 0, batch jobs) admitted and unfinished."""
    urgent_workers: int = 1
    """Decode workers kept for urgent inputs, so a long bulk file never holds one up."""

    def __post_init__(self) -> None:
        for name in ("max_urgent", "max_bulk"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServiceOptions.{name} must be >= 1, not {getattr(self, name)}")
        if self.urgent_workers < 0:
            raise ValueError(
                f"ServiceOptions.urgent_workers must be >= 0, not {self.urgent_workers}"
            )


@dataclass(frozen=True)
class Load:
    """What the service holds now."""

    urgent: int  # admitted urgent inputs not yet finished
    bulk: int  # admitted bulk inputs not yet finished
    backlog: int  # bulk inputs not yet handed to a decode worker


class Service:
    """Transcribes inputs submitted from any thread, for as long as it is open."""

    def __init__(self, engine: Engine, options: ServiceOptions | None = None) -> None:
        self.engine = engine
        self.options = options or ServiceOptions()
        self._run = Run(engine, urgent_workers=self.options.urgent_workers)
        self._lock = threading.Condition()
        self._futures: dict[int, tuple[Future[InputResult], bool]] = {}  # index -> (future, urgent)
        self._indices: dict[Future[InputResult], int] = {}
        self._backlog: OrderedDict[int, AudioInput] = OrderedDict()
        self._ids = itertools.count()
        self._urgent = 0
        self._closed = False
        self._seconds_per_input = 1.0  # a running estimate, for Retry-After
        self._run.start()
        self._feeder = threading.Thread(target=self._feed, daemon=True, name="service-feed")
        self._feeder.start()
        self._dispatcher = threading.Thread(target=self._dispatch, daemon=True, name="service")
        self._dispatcher.start()

    def submit(self, spec: AudioInput) -> Future[InputResult]:
        """Admit one input; its future resolves to its ``InputResult`` (transcript or error).

        Raises ``OverloadedError`` when its lane is full and ``RuntimeError`` once closed.
        """
        urgent = spec.priority > 0
        with self._lock:
            if self._closed:
                raise RuntimeError(CLOSED)
            held = self._urgent if urgent else len(self._futures) - self._urgent
            limit = self.options.max_urgent if urgent else self.options.max_bulk
            if held >= limit:
                lane = "interactive" if urgent else "bulk"
                raise OverloadedError(
                    f"the {lane} queue is full ({held} inputs waiting)",
                    retry_after=self._retry_after(held),
                )
            index = next(self._ids)
            future: Future[InputResult] = Future()
            future.set_running_or_notify_cancel()
            self._futures[index] = (future, urgent)
            self._indices[future] = index
            self._urgent += urgent
            if not urgent:
                self._backlog[index] = spec
                self._lock.notify_all()
        if urgent:
            self._run.add(index, spec)
        return future

    def cancel(self, future: Future[InputResult]) -> bool:
        """Stop work on a submitted input; its future resolves with the error "cancelled".
        False if it had already finished."""
        with self._lock:
            index = self._indices.get(future)
            if index is None:
                return False
            waiting = self._backlog.pop(index, None)
            if waiting is not None:
                result = InputResult(index, waiting.label, None, CANCELLED, "cancelled")
                self._resolve(index, result)
                return True
        self._run.cancel(index)
        return True

    def progress(self, future: Future[InputResult]) -> float:
        """Seconds of the input's audio decoded so far (up to the end of the furthest segment
        done); 0 before its first segment and once it has finished."""
        with self._lock:
            index = self._indices.get(future)
        return 0.0 if index is None else self._run.decoded.get(index, 0.0)

    def load(self) -> Load:
        with self._lock:
            held = len(self._futures)
            return Load(self._urgent, held - self._urgent, len(self._backlog))

    def close(self) -> None:
        """Stop at once: unfinished inputs resolve with an error saying the service closed."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._lock.notify_all()
        self._run.stop()
        self._feeder.join(timeout=30)
        self._dispatcher.join(timeout=30)
        with self._lock:
            for index in list(self._futures):
                self._resolve(index, InputResult(index, str(index), None, CLOSED, "closed"))
            self._backlog.clear()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _feed(self) -> None:
        """Move bulk inputs from the backlog into the engine's bounded lane, oldest first."""
        while True:
            with self._lock:
                while not self._backlog and not self._closed:
                    self._lock.wait()
                if self._closed:
                    return
                index, spec = self._backlog.popitem(last=False)
            if not self._run.add(index, spec):
                return

    def _dispatch(self) -> None:
        for result in self._run.results():
            with self._lock:
                self._resolve(result.index, result)

    def _resolve(self, index: int, result: InputResult) -> None:
        """Hand a result to its future (once; a late duplicate is dropped). Holds the lock."""
        entry = self._futures.pop(index, None)
        if entry is None:
            return
        future, urgent = entry
        del self._indices[future]
        self._urgent -= urgent
        if result.transcript is not None:
            self._seconds_per_input = 0.9 * self._seconds_per_input + 0.1 * max(
                result.transcript.duration / max(self.engine.stats.speed, 1.0), 0.01
            )
        future.set_result(result)

    def _retry_after(self, held: int) -> float:
        """Seconds until about a tenth of the held inputs have finished (at least 1)."""
        runners = len(self.engine.runners)
        return max(1.0, round(self._seconds_per_input * held / 10 / runners, 1))
