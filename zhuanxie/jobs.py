"""Durable batch jobs: a job's options, its inputs, and each input's state and results, in SQLite.

A job lives in a directory: ``job.sqlite3`` holds the record and ``job.lock`` the lock. One
process at a time works on a job through a ``JobStore``; ``JobView`` reads one, also while it
runs (``zhuanxie jobs show``). An input goes through these states:

    pending --claim_pending--> running --mark_done--> done
                                       --mark_failed--> failed
    failed with attempts left   --next open--> pending (retried once per run)
    running (the process died)  --next open--> pending, or failed once its attempts are spent
    done with an output missing --next open--> pending
    not running, its file changed (size or mtime) --add_inputs--> pending

Durability. Every state change is one committed transaction, and the caller writes an input's
outputs (atomically: temp file + rename) before ``mark_done``, so "done" implies the outputs
exist. Killed at any moment, a job is left with each input done (outputs in place), or running
or pending (outputs absent, or complete but unrecorded, and rewritten whole on the next run):
nothing lost, nothing listed twice. The database runs in WAL mode with ``synchronous=FULL``. In
WAL mode ``NORMAL`` already survives a killed process (a commit is in the WAL file, i.e. with the
OS, before ``COMMIT`` returns); ``FULL`` adds an fsync per commit, so a record also survives
power loss. A job commits a few times per input file, each worth seconds of compute, so the
fsyncs cost nothing noticeable. Outputs survive power loss only if their writer fsyncs them
before the rename.

The lock is ``flock`` on ``job.lock``: the kernel drops it when its holder exits, however it
exits (``kill -9`` included), so there is no stale pid file to clean up. The pid and start time
written into the lock file only name the holder in messages. Locks are POSIX only, and may not
work on network filesystems, where SQLite's WAL mode does not work either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast, get_args

DB_NAME = "job.sqlite3"
LOCK_NAME = "job.lock"
SCHEMA_VERSION = 1
# A JobView checks whether a job is in use by taking a shared lock for an instant; an opener
# retries this long so that such a check never makes it fail.
LOCK_GRACE_SECONDS = 0.2

State = Literal["pending", "running", "done", "failed"]
STATES: tuple[State, ...] = get_args(State)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    size INTEGER,
    mtime_ns INTEGER,
    state TEXT NOT NULL CHECK (state IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    outputs TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    duration REAL,
    added_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS items_by_state ON items (state);
"""
_ITEM_COLUMNS = (
    "key, state, attempts, outputs, error, duration, size, mtime_ns, added_at, started_at,"
    " finished_at"
)
# Columns of an input that starts over: no attempts, results or error.
_RESET = (
    "state = 'pending', attempts = 0, outputs = '[]', error = NULL, duration = NULL,"
    " started_at = NULL, finished_at = NULL"
)
_INTERRUPTED = "the process ended while this input was running (killed, or crashed)"


class JobError(Exception):
    """A job cannot be opened or changed as asked; the message says why and what to do."""


class JobInUseError(JobError):
    """Another process (or another store in this one) holds the job."""

    def __init__(self, directory: Path, holder: JobHolder) -> None:
        self.directory = directory
        self.holder = holder
        super().__init__(
            f"job {directory} is in use by {holder.describe()}; wait for it to finish or stop"
            " it (the job is released as soon as that process ends, however it ends)"
        )


class JobOptionsChangedError(JobError):
    """The options given differ from those the job was started with."""

    def __init__(
        self, directory: Path, stored: Mapping[str, Any], given: Mapping[str, Any]
    ) -> None:
        self.changed_keys = tuple(
            sorted(
                k
                for k in stored.keys() | given.keys()
                if stored.get(k, _UNSET) != given.get(k, _UNSET)
            )
        )
        changes = ", ".join(
            f"{k} {_show(stored.get(k, _UNSET))} -> {_show(given.get(k, _UNSET))}"
            for k in self.changed_keys
        )
        super().__init__(
            f"job {directory} was started with other options: {changes}. Run it with its"
            " options, or allow the change (allow_option_change=True) to record the new ones"
            " for the inputs not yet done"
        )


@dataclass(frozen=True)
class JobHolder:
    """The process working on a job, as written in its lock file."""

    pid: int | None
    """Its process id; None while a just-started holder has not written it yet."""
    since: float | None
    """When it opened the job (seconds since the epoch)."""

    def describe(self) -> str:
        """ "process 123 since 2025-01-02 03:04:05", for messages."""
        if self.pid is None or self.since is None:
            return "another process"
        return f"process {self.pid} since {_local_time(self.since)}"


@dataclass(frozen=True)
class JobItem:
    """One input of a job and what became of it."""

    key: str
    """The input: an absolute path or a caller's id."""
    state: State
    attempts: int
    """Claims so far, the running one included; reset when the input starts over."""
    outputs: tuple[str, ...]
    """Absolute paths of its results (done inputs only)."""
    error: str | None
    """Why the last attempt failed or was interrupted; None once done."""
    duration: float | None
    """Its audio's length in seconds (done inputs only)."""
    size: int | None
    """The file's size in bytes when registered; None for ids and files that were missing."""
    mtime_ns: int | None
    """The file's modification time (ns) when registered; None like ``size``."""
    added_at: float
    """When it was registered (seconds since the epoch), like the other times."""
    started_at: float | None
    finished_at: float | None


@dataclass(frozen=True)
class JobSummary:
    """How many inputs are in each state, and the audio done."""

    total: int
    pending: int
    running: int
    done: int
    failed: int
    failed_permanently: int
    """Failed inputs with no attempts left (included in ``failed``)."""
    audio_seconds: float
    """Audio length of the done inputs."""


@dataclass(frozen=True)
class AddedInputs:
    """What ``JobStore.add_inputs`` registered."""

    new: int
    """Inputs the job did not have."""
    changed: int
    """Known inputs whose file changed since registration, now pending again."""


@dataclass(frozen=True)
class Recovery:
    """What opening a job did to leave it consistent, for the caller to report."""

    interrupted: int
    """Inputs left running by a process that died, now pending."""
    exhausted: int
    """Inputs left running by a process that died on their last attempt, now failed."""
    retried: int
    """Failed inputs with attempts left, now pending."""
    outputs_missing: int
    """Done inputs whose output files are gone, now pending."""


_Record = TypeVar("_Record", bound="_JobRecord")


class _JobRecord:
    """Reading a job: what ``JobView`` and ``JobStore`` share."""

    def __init__(self, directory: Path, conn: sqlite3.Connection) -> None:
        self.directory = directory
        self._conn = conn
        # The engine may report results from its worker threads; one operation at a time.
        self._mutex = threading.Lock()
        self._closed = False

    @property
    def options(self) -> dict[str, Any]:
        """The options the job runs with."""
        return cast(dict[str, Any], json.loads(self._meta("options")))

    @property
    def max_attempts(self) -> int:
        """Attempts an input gets, as set by the last ``JobStore.open``."""
        return int(self._meta("max_attempts"))

    def holder(self) -> JobHolder | None:
        """The process working on the job now, or None when none is."""
        raise NotImplementedError

    def summary(self) -> JobSummary:
        """Counts per state and the audio done, from one consistent read."""
        max_attempts = self.max_attempts
        with self._mutex:
            row = self._conn.execute(
                "SELECT count(*), total(state = 'pending'), total(state = 'running'),"
                " total(state = 'done'), total(state = 'failed'),"
                " total(state = 'failed' AND attempts >= ?),"
                " total(CASE WHEN state = 'done' THEN duration END) FROM items",
                (max_attempts,),
            ).fetchone()
        total, pending, running, done, failed, permanently, audio_seconds = row
        return JobSummary(
            total,
            int(pending),
            int(running),
            int(done),
            int(failed),
            int(permanently),
            audio_seconds,
        )

    def items(self, state: State | None = None) -> list[JobItem]:
        """The inputs in registration order, all or those in ``state``."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown job state {state!r}; states are {', '.join(STATES)}")
        with self._mutex:
            rows = self._conn.execute(
                f"SELECT {_ITEM_COLUMNS} FROM items WHERE ?1 IS NULL OR state = ?1 ORDER BY id",
                (state,),
            ).fetchall()
        return [_item(row) for row in rows]

    def close(self) -> None:
        """Close the database; closing twice is harmless."""
        with self._mutex:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def __enter__(self: _Record) -> _Record:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _meta(self, name: str) -> str:
        with self._mutex:
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return cast(str, row[0])


class JobView(_JobRecord):
    """A read-only look at a job, which may be running in another process."""

    @classmethod
    def open(cls, directory: str | os.PathLike[str]) -> JobView:
        """Open the job in ``directory`` for reading; JobError if there is none."""
        directory = Path(directory).absolute()
        path = directory / DB_NAME
        if not path.is_file():
            raise JobError(f"no job in {directory}: {DB_NAME} not found")
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        try:
            _check_schema(conn, directory)
        except BaseException:
            conn.close()
            raise
        return cls(directory, conn)

    def holder(self) -> JobHolder | None:
        """The process working on the job now, or None when none is."""
        try:
            fd = os.open(self.directory / LOCK_NAME, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return _read_holder(fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)


class JobStore(_JobRecord):
    """A job opened for work, held exclusively until ``close`` (or until the process ends).

    Use ``JobStore.open``, preferably as a context manager.
    """

    def __init__(
        self,
        directory: Path,
        conn: sqlite3.Connection,
        lock_fd: int,
        since: float,
        recovery: Recovery,
    ) -> None:
        super().__init__(directory, conn)
        self._lock_fd = lock_fd
        self._since = since
        self.recovery = recovery
        """What opening the job did to leave it consistent."""

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        options: Mapping[str, Any],
        *,
        allow_option_change: bool = False,
        max_attempts: int = 3,
    ) -> JobStore:
        """Start the job in ``directory`` (created if needed), or resume it.

        ``options`` (JSON values) are recorded by a new job and must equal the recorded ones when
        resuming, unless ``allow_option_change`` (then they replace them). An input is attempted
        at most ``max_attempts`` times. Opening takes the job's lock (JobInUseError if another
        holds it) and recovers what a previous process left behind (see ``Recovery``).
        """
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be a positive int, got {max_attempts!r}")
        given = _json_options(options)
        directory = Path(directory).absolute()
        directory.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as cleanup:
            since = time.time()
            lock_fd = _lock(directory, since)
            cleanup.callback(os.close, lock_fd)
            conn = sqlite3.connect(
                directory / DB_NAME, isolation_level=None, check_same_thread=False
            )
            cleanup.callback(conn.close)
            try:
                _prepare(conn, directory)
            except sqlite3.DatabaseError as exc:
                raise JobError(f"{directory / DB_NAME} is not a zhuanxie job: {exc}") from None
            _start_or_resume(conn, directory, given, allow_option_change, max_attempts)
            recovery = _recover(conn, max_attempts)
            cleanup.pop_all()
        return cls(directory, conn, lock_fd, since, recovery)

    def holder(self) -> JobHolder:
        """This process."""
        return JobHolder(os.getpid(), self._since)

    def add_inputs(self, inputs: Iterable[str | os.PathLike[str]]) -> AddedInputs:
        """Register inputs; known ones keep their state unless their file changed.

        A ``str`` is the key as given (an id, or a path the caller made absolute); a path object
        is made absolute. A key that is an absolute path to a file gets its size and mtime
        recorded; when they differ on a later call, the input starts over (pending, no
        attempts), unless it is running.
        """
        new = changed = 0
        now = time.time()
        with self._transaction() as conn:
            for given in inputs:
                key = _key(given)
                size, mtime_ns = _stat(key)
                cursor = conn.execute(
                    "INSERT INTO items (key, size, mtime_ns, state, added_at)"
                    " VALUES (?, ?, ?, 'pending', ?) ON CONFLICT (key) DO NOTHING",
                    (key, size, mtime_ns, now),
                )
                if cursor.rowcount:
                    new += 1
                elif size is not None:
                    cursor = conn.execute(
                        f"UPDATE items SET {_RESET}, size = ?, mtime_ns = ? WHERE key = ?"
                        " AND state != 'running' AND (size IS NOT ? OR mtime_ns IS NOT ?)",
                        (size, mtime_ns, key, size, mtime_ns),
                    )
                    changed += cursor.rowcount
        return AddedInputs(new, changed)

    def claim_pending(self, limit: int) -> list[str]:
        """Mark up to ``limit`` pending inputs running, in registration order, and return them.

        Each claim counts an attempt. Inputs that fail in this run are not claimed again until
        the job is reopened: a broken file fails the same way at once, and out-of-memory errors
        are retried by the memory governor already.
        """
        if limit < 1:
            raise ValueError(f"claim_pending limit must be at least 1, got {limit}")
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, key FROM items WHERE state = 'pending' ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
            now = time.time()
            conn.executemany(
                "UPDATE items SET state = 'running', attempts = attempts + 1, started_at = ?,"
                " finished_at = NULL WHERE id = ?",
                [(now, row[0]) for row in rows],
            )
        return [row[1] for row in rows]

    def mark_done(
        self, key: str, outputs: Sequence[str | os.PathLike[str]], duration: float
    ) -> None:
        """Record a claimed input as done: its outputs, already written, and audio seconds."""
        paths = [os.path.abspath(os.fspath(path)) for path in outputs]
        missing = [path for path in paths if not os.path.exists(path)]
        if missing:
            raise JobError(
                f"cannot mark {key!r} done: its output {missing[0]} does not exist; write the"
                " outputs before marking the input done"
            )
        if not (math.isfinite(duration) and duration >= 0):
            raise ValueError(f"duration of {key!r} must be finite and >= 0 s, got {duration}")
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE items SET state = 'done', outputs = ?, duration = ?, error = NULL,"
                " finished_at = ? WHERE key = ? AND state = 'running'",
                (json.dumps(paths, ensure_ascii=False), duration, time.time(), key),
            )
            if not cursor.rowcount:
                raise self._not_running(conn, key, "done")

    def mark_failed(self, key: str, error: str) -> None:
        """Record a claimed input's failure; it is retried in a later run if attempts remain."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE items SET state = 'failed', error = ?, finished_at = ?"
                " WHERE key = ? AND state = 'running'",
                (error, time.time(), key),
            )
            if not cursor.rowcount:
                raise self._not_running(conn, key, "failed")

    def close(self) -> None:
        """Return unfinished claims to pending (their attempt not counted) and release the job.

        A process that dies without closing leaves its claims running; the next open counts
        those attempts, so an input that kills the process every time ends up failed.
        """
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            try:
                with _transaction(self._conn):
                    self._conn.execute(
                        "UPDATE items SET state = 'pending', attempts = attempts - 1,"
                        " started_at = NULL WHERE state = 'running'"
                    )
            finally:
                self._conn.close()
                os.close(self._lock_fd)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._mutex, _transaction(self._conn):
            yield self._conn

    def _not_running(self, conn: sqlite3.Connection, key: str, outcome: str) -> JobError:
        row = conn.execute("SELECT state FROM items WHERE key = ?", (key,)).fetchone()
        if row is None:
            return JobError(f"{key!r} is not an input of job {self.directory}")
        return JobError(
            f"cannot mark {key!r} {outcome}: it is {row[0]}, not running; claim it with"
            " claim_pending first"
        )


def format_summary(job: JobView | JobStore) -> str:
    """The job's state as a small plain-text report, for ``zhuanxie jobs show``."""
    summary = job.summary()
    holder = job.holder()
    lines = [f"job {job.directory} ({holder.describe() if holder else 'idle'})", "options:"]
    lines += [f"  {name} = {_show(value)}" for name, value in sorted(job.options.items())]
    retried = summary.failed - summary.failed_permanently
    notes = {
        "done": f"{_clock(summary.audio_seconds)} of audio",
        "running": "" if holder else "interrupted; resumed by the next run",
        "failed": f"{summary.failed_permanently} permanently, {retried} retried by the next run",
    }
    lines.append("")
    for state in STATES:
        count: int = getattr(summary, state)
        note = notes.get(state, "") if count else ""
        lines.append(f"{state:<8} {count:>7}  {note}".rstrip())
    lines.append(f"{'total':<8} {summary.total:>7}")
    failures = job.items("failed")
    if failures:
        lines += ["", "failures:"]
        for item in failures:
            reason = (item.error or "no reason recorded").splitlines()[0]
            lines.append(f"  {item.key}: attempt {item.attempts} of {job.max_attempts}: {reason}")
    return "\n".join(lines)


class _Unset:
    def __repr__(self) -> str:
        return "(unset)"


_UNSET = _Unset()


def _show(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _clock(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _local_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes SQLite's write lock up front; the job lock already excludes other writers.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _json_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as they read back from JSON (tuples become lists), so comparisons are fair."""
    for name, value in options.items():
        if not isinstance(name, str):
            raise TypeError(f"job option names must be str, got {name!r}")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"job option {name!r} is not a JSON value: {exc}") from None
    return cast(dict[str, Any], json.loads(json.dumps(dict(options))))


def _lock(directory: Path, since: float) -> int:
    """Take the job's lock and write this process into it; the open lock file's descriptor."""
    # Not O_TRUNC: the holder's pid must survive a refused opener.
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + LOCK_GRACE_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise JobInUseError(directory, _read_holder(fd)) from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": since}).encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_holder(fd: int) -> JobHolder:
    try:
        written = json.loads(os.pread(fd, 4096, 0))
        return JobHolder(int(written["pid"]), float(written["since"]))
    except (ValueError, KeyError, TypeError):
        return JobHolder(None, None)


def _prepare(conn: sqlite3.Connection, directory: Path) -> None:
    """Set WAL mode and durable commits (see the module docstring), and create the tables."""
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise JobError(
            f"job {directory}: SQLite cannot use WAL mode there (got {mode!r}); put the job on"
            " a local disk"
        )
    conn.execute("PRAGMA synchronous = FULL")
    # Each statement commits alone; all are IF NOT EXISTS, so a half-created job is completed.
    conn.executescript(_SCHEMA)


def _check_schema(conn: sqlite3.Connection, directory: Path) -> None:
    try:
        row = conn.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
    except sqlite3.DatabaseError as exc:
        raise JobError(f"{directory / DB_NAME} is not a zhuanxie job: {exc}") from None
    if row is None or int(row[0]) != SCHEMA_VERSION:
        found = "no schema version" if row is None else f"schema {row[0]}"
        raise JobError(
            f"{directory / DB_NAME} has {found}; this zhuanxie reads schema {SCHEMA_VERSION}"
        )


def _start_or_resume(
    conn: sqlite3.Connection,
    directory: Path,
    given: dict[str, Any],
    allow_option_change: bool,
    max_attempts: int,
) -> None:
    """Record a new job's options, or check a resumed job's; set ``max_attempts``."""
    encoded = json.dumps(given, sort_keys=True, ensure_ascii=False)
    with _transaction(conn):
        conn.executemany(
            "INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
            [
                ("schema", str(SCHEMA_VERSION)),
                ("options", encoded),
                ("created_at", str(time.time())),
            ],
        )
        _check_schema(conn, directory)
        stored = json.loads(
            conn.execute("SELECT value FROM meta WHERE name = 'options'").fetchone()[0]
        )
        if stored != given:
            if not allow_option_change:
                raise JobOptionsChangedError(directory, stored, given)
            conn.execute("UPDATE meta SET value = ? WHERE name = 'options'", (encoded,))
        conn.execute(
            "INSERT INTO meta (name, value) VALUES ('max_attempts', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (str(max_attempts),),
        )


def _recover(conn: sqlite3.Connection, max_attempts: int) -> Recovery:
    """Settle what a previous process left: we hold the lock, so nothing is really running."""
    done = conn.execute("SELECT id, outputs FROM items WHERE state = 'done'").fetchall()
    gone = [(id_,) for id_, outputs in done if not all(map(os.path.exists, json.loads(outputs)))]
    with _transaction(conn):
        exhausted = conn.execute(
            "UPDATE items SET state = 'failed', finished_at = ?,"
            " error = 'interrupted on attempt ' || attempts || ' of ' || ? || ': ' || ?"
            " WHERE state = 'running' AND attempts >= ?",
            (time.time(), max_attempts, _INTERRUPTED, max_attempts),
        ).rowcount
        interrupted = conn.execute(
            "UPDATE items SET state = 'pending', error = ? WHERE state = 'running'",
            (f"interrupted: {_INTERRUPTED}",),
        ).rowcount
        retried = conn.execute(
            "UPDATE items SET state = 'pending' WHERE state = 'failed' AND attempts < ?",
            (max_attempts,),
        ).rowcount
        conn.executemany(f"UPDATE items SET {_RESET} WHERE id = ?", gone)
    return Recovery(interrupted, exhausted, retried, len(gone))


def _key(given: str | os.PathLike[str]) -> str:
    key = given if isinstance(given, str) else os.path.abspath(os.fspath(given))
    if not key:
        raise ValueError("an input key must not be empty")
    return key


def _stat(key: str) -> tuple[int | None, int | None]:
    # Only absolute paths: an id such as "utt1" must not pick up a file in the current directory.
    if not os.path.isabs(key):
        return None, None
    try:
        stat = os.stat(key)
    except OSError:
        return None, None
    return stat.st_size, stat.st_mtime_ns


def _item(row: tuple[Any, ...]) -> JobItem:
    key, state, attempts, outputs, *rest = row  # in the order of _ITEM_COLUMNS
    return JobItem(key, state, attempts, tuple(json.loads(outputs)), *rest)
