"""Durable jobs: state transitions, retries, options, the lock, and recovery after kill -9."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zhuanxie.jobs import (
    AddedInputs,
    JobError,
    JobInUseError,
    JobOptionsChangedError,
    JobStore,
    JobSummary,
    JobView,
    Recovery,
    format_summary,
)

OPTIONS = {"model": "seaco-paraformer-large", "formats": ["txt", "srt"], "output_dir": "/out"}
# Subprocesses load jobs.py by its path: importing the zhuanxie package would import torch,
# seconds per process. jobs.py itself needs only the standard library.
JOBS_PY = Path(__file__).resolve().parents[1] / "zhuanxie" / "jobs.py"
PRELUDE = f"""
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("jobs", {str(JOBS_PY)!r})
jobs = importlib.util.module_from_spec(spec)
sys.modules["jobs"] = jobs
spec.loader.exec_module(jobs)
"""
# Claims `claim` of inputs a, b, c, says so, and waits to be killed.
CLAIMER = (
    PRELUDE
    + """
store = jobs.JobStore.open(sys.argv[1], {}, max_attempts=int(sys.argv[2]))
store.add_inputs(["a", "b", "c"])
print(" ".join(store.claim_pending(int(sys.argv[3]))), flush=True)
time.sleep(60)
"""
)
# The resumable loop of a batch job: claim one input, write its output atomically, record it.
WORKER = (
    PRELUDE
    + """
job, out, count, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
with jobs.JobStore.open(job, {"out": out}, max_attempts=5) as store:
    store.add_inputs(f"utt{i:03d}" for i in range(count))
    print("ready", flush=True)
    while keys := store.claim_pending(1):
        path = os.path.join(out, keys[0] + ".txt")
        # A fixed temp name: the lock makes this the only writer, and a rerun reuses the name.
        with open(path + ".tmp", "w") as f:
            f.write(f"transcript of {keys[0]}\\n")
        time.sleep(pause)
        os.replace(path + ".tmp", path)
        time.sleep(pause)
        store.mark_done(keys[0], [path], duration=1.5)
        time.sleep(pause)
"""
)


def run_python(code: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=30
    )


def start_python(code: str, *args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE, text=True
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=10) == -signal.SIGKILL


def crash_after_claiming(job: Path, claim: int, max_attempts: int = 3) -> list[str]:
    """Run CLAIMER, kill -9 it once it has claimed; the keys it claimed."""
    process = start_python(CLAIMER, job, max_attempts, claim)
    assert process.stdout is not None
    claimed = process.stdout.readline().split()
    kill(process)
    return claimed


def write(path: Path, text: str = "x") -> str:
    path.write_text(text)
    return str(path)


def states(store: JobStore | JobView) -> dict[str, str]:
    return {item.key: item.state for item in store.items()}


def test_new_job_has_its_inputs_pending(tmp_path: Path) -> None:
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        assert store.add_inputs(["a", "b"]) == AddedInputs(new=2, changed=0)
        assert states(store) == {"a": "pending", "b": "pending"}
        assert store.options == OPTIONS
        assert store.recovery == Recovery(0, 0, 0, 0)


def test_add_inputs_is_idempotent(tmp_path: Path) -> None:
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        store.add_inputs(["a", "b"])
        assert store.add_inputs(["b", "c", "c"]) == AddedInputs(new=1, changed=0)
        assert [item.key for item in store.items()] == ["a", "b", "c"]


def test_path_inputs_are_made_absolute_and_stat_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"12345")
    monkeypatch.chdir(tmp_path)
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        store.add_inputs([Path("a.wav"), "a.wav"])
        by_key = {item.key: item for item in store.items()}
    assert by_key[str(audio)].size == 5
    assert by_key[str(audio)].mtime_ns == audio.stat().st_mtime_ns
    # A str is a key as given: "a.wav" is an id, not stat'ed against the current directory.
    assert by_key["a.wav"].size is None


def test_options_round_trip_and_tuples_equal_lists(tmp_path: Path) -> None:
    JobStore.open(tmp_path, OPTIONS).close()
    with JobStore.open(tmp_path, {**OPTIONS, "formats": ("txt", "srt")}) as store:
        assert store.options == OPTIONS


def test_claim_marks_running_in_order_and_counts_an_attempt(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, OPTIONS) as store:
        store.add_inputs(["a", "b", "c"])
        assert store.claim_pending(2) == ["a", "b"]
        assert states(store) == {"a": "running", "b": "running", "c": "pending"}
        assert [item.attempts for item in store.items()] == [1, 1, 0]
        assert store.claim_pending(5) == ["c"]
        assert store.claim_pending(5) == []


def test_mark_done_records_outputs_and_duration(tmp_path: Path) -> None:
    out = write(tmp_path / "a.txt")
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        store.add_inputs(["a", "b"])
        store.claim_pending(2)
        store.mark_done("a", [out], duration=90.0)
        (item,) = store.items("done")
        summary = store.summary()
    assert (item.key, item.outputs, item.duration, item.error) == ("a", (out,), 90.0, None)
    assert summary == JobSummary(2, 0, 1, 1, 0, 0, audio_seconds=90.0)


def test_mark_done_refuses_missing_output(tmp_path: Path) -> None:
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        store.add_inputs(["a"])
        store.claim_pending(1)
        with pytest.raises(JobError, match=r"'a' done: its output .*nope\.txt does not exist"):
            store.mark_done("a", [tmp_path / "nope.txt"], duration=1.0)
        assert states(store) == {"a": "running"}


def test_mark_refuses_inputs_not_claimed(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, OPTIONS) as store:
        store.add_inputs(["a"])
        with pytest.raises(JobError, match="cannot mark 'a' failed: it is pending, not running"):
            store.mark_failed("a", "boom")
        with pytest.raises(JobError, match="'zz' is not an input of job"):
            store.mark_done("zz", [], duration=1.0)


def test_failed_input_is_not_claimed_again_in_the_same_run(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, OPTIONS) as store:
        store.add_inputs(["a"])
        store.claim_pending(1)
        store.mark_failed("a", "cannot decode")
        assert store.claim_pending(1) == []
        (item,) = store.items("failed")
        assert (item.attempts, item.error) == (1, "cannot decode")


def test_failed_input_is_retried_per_run_until_max_attempts(tmp_path: Path) -> None:
    for attempt in (1, 2):
        with JobStore.open(tmp_path, OPTIONS, max_attempts=2) as store:
            if attempt == 1:
                store.add_inputs(["a"])
            assert store.claim_pending(1) == ["a"]
            store.mark_failed("a", f"boom {attempt}")
    with JobStore.open(tmp_path, OPTIONS, max_attempts=2) as store:
        assert store.claim_pending(1) == []
        assert store.recovery.retried == 0
        (item,) = store.items("failed")
        assert (item.attempts, item.error) == (2, "boom 2")
        assert store.summary().failed_permanently == 1


def test_more_attempts_revive_permanent_failures(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, OPTIONS, max_attempts=1) as store:
        store.add_inputs(["a"])
        store.claim_pending(1)
        store.mark_failed("a", "boom")
    with JobStore.open(tmp_path, OPTIONS, max_attempts=2) as store:
        assert store.recovery.retried == 1
        assert store.claim_pending(1) == ["a"]


def test_changed_options_are_refused_naming_the_keys(tmp_path: Path) -> None:
    JobStore.open(tmp_path, OPTIONS).close()
    changed = {**OPTIONS, "formats": ["json"], "hotwords": ["魔搭"]}
    with pytest.raises(JobOptionsChangedError) as caught:
        JobStore.open(tmp_path, changed)
    assert caught.value.changed_keys == ("formats", "hotwords")
    assert "formats ['txt', 'srt'] -> ['json'], hotwords (unset) -> ['魔搭']" in str(caught.value)
    assert "allow_option_change=True" in str(caught.value)
    # Refused, the job is not held: opening it as it was works.
    JobStore.open(tmp_path, OPTIONS).close()


def test_changed_options_are_recorded_when_allowed(tmp_path: Path) -> None:
    JobStore.open(tmp_path, OPTIONS).close()
    changed = {**OPTIONS, "formats": ["json"]}
    JobStore.open(tmp_path, changed, allow_option_change=True).close()
    with JobView.open(tmp_path) as view:
        assert view.options == changed


def test_options_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="job option 'output_dir' is not a JSON value"):
        JobStore.open(tmp_path, {"output_dir": tmp_path})


def test_second_process_is_refused_while_the_job_is_open(tmp_path: Path) -> None:
    opener = PRELUDE + "jobs.JobStore.open(sys.argv[1], {}).close()\n"
    with JobStore.open(tmp_path, {}):
        refused = run_python(opener, tmp_path)
        assert refused.returncode == 1
        assert f"JobInUseError: job {tmp_path} is in use by process {os.getpid()} since" in (
            refused.stderr
        )
    assert run_python(opener, tmp_path).returncode == 0


def test_second_store_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, {}), pytest.raises(JobInUseError) as caught:
        JobStore.open(tmp_path, {})
    assert caught.value.holder.pid == os.getpid()


def test_view_reads_a_job_in_use(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, OPTIONS) as store:
        store.add_inputs(["a"])
        store.claim_pending(1)
        with JobView.open(tmp_path) as view:
            assert states(view) == {"a": "running"}
            assert view.holder() == store.holder()
    with JobView.open(tmp_path) as view:
        assert view.holder() is None


def test_view_of_a_directory_without_a_job_is_refused(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=f"no job in {tmp_path}: job.sqlite3 not found"):
        JobView.open(tmp_path)


def test_close_returns_unfinished_claims_without_counting_them(tmp_path: Path) -> None:
    with JobStore.open(tmp_path, OPTIONS) as store:
        store.add_inputs(["a"])
        store.claim_pending(1)
    with JobView.open(tmp_path) as view:
        (item,) = view.items()
    assert (item.state, item.attempts) == ("pending", 0)


def test_crash_leaves_claims_running_and_reopening_resets_them(tmp_path: Path) -> None:
    assert crash_after_claiming(tmp_path, claim=2) == ["a", "b"]
    with JobView.open(tmp_path) as view:
        assert states(view) == {"a": "running", "b": "running", "c": "pending"}
        assert view.holder() is None
    with JobStore.open(tmp_path, {}) as store:
        assert store.recovery == Recovery(interrupted=2, exhausted=0, retried=0, outputs_missing=0)
        assert states(store) == {"a": "pending", "b": "pending", "c": "pending"}
        # The interrupted attempt counts: an input that kills the process cannot loop forever.
        assert [item.attempts for item in store.items()] == [1, 1, 0]


def test_input_interrupted_on_its_last_attempt_fails(tmp_path: Path) -> None:
    crash_after_claiming(tmp_path, claim=1, max_attempts=1)
    with JobStore.open(tmp_path, {}, max_attempts=1) as store:
        assert store.recovery.exhausted == 1
        (item,) = store.items("failed")
    assert item.key == "a"
    assert item.error is not None
    assert item.error.startswith("interrupted on attempt 1 of 1: the process ended")


def test_done_input_whose_output_vanished_is_reset(tmp_path: Path) -> None:
    kept, lost = write(tmp_path / "a.txt"), write(tmp_path / "b.txt")
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        store.add_inputs(["a", "b"])
        store.claim_pending(2)
        store.mark_done("a", [kept], duration=1.0)
        store.mark_done("b", [lost], duration=1.0)
    os.remove(lost)
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        assert store.recovery.outputs_missing == 1
        assert states(store) == {"a": "done", "b": "pending"}
        (item,) = store.items("pending")
        assert (item.attempts, item.outputs, item.duration) == (0, (), None)


def test_changed_input_file_starts_over(tmp_path: Path) -> None:
    audio, out = tmp_path / "a.wav", write(tmp_path / "a.txt")
    audio.write_bytes(b"1234")
    with JobStore.open(tmp_path / "job", OPTIONS) as store:
        store.add_inputs([audio])
        store.claim_pending(1)
        store.mark_done(str(audio), [out], duration=1.0)
        assert store.add_inputs([audio]) == AddedInputs(new=0, changed=0)
        audio.write_bytes(b"123456")
        assert store.add_inputs([audio]) == AddedInputs(new=0, changed=1)
        (item,) = store.items()
    assert (item.state, item.attempts, item.size) == ("pending", 0, 6)


def test_format_summary_shows_counts_audio_and_failures(tmp_path: Path) -> None:
    out = write(tmp_path / "a.txt")
    with JobStore.open(tmp_path / "job", {"model": "m"}, max_attempts=1) as store:
        store.add_inputs(["a", "b", "c"])
        store.claim_pending(2)
        store.mark_done("a", [out], duration=5400.0)
        store.mark_failed("b", "not audio: no stream found\ndetails")
    with JobView.open(tmp_path / "job") as view:
        text = format_summary(view)
    assert text == "\n".join(
        [
            f"job {tmp_path / 'job'} (idle)",
            "options:",
            "  model = 'm'",
            "",
            "pending        1",
            "running        0",
            "done           1  1:30:00 of audio",
            "failed         1  1 permanently, 0 retried by the next run",
            "total          3",
            "",
            "failures:",
            "  b: attempt 1 of 1: not audio: no stream found",
        ]
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kill_9_at_any_moment_loses_and_duplicates_nothing(tmp_path: Path, seed: int) -> None:
    count, pause = 50, 0.004
    job, out = tmp_path / "job", tmp_path / "out"
    out.mkdir()
    worker = start_python(WORKER, job, out, count, pause)
    assert worker.stdout is not None
    assert worker.stdout.readline() == "ready\n"
    # The loop sleeps 3 pauses per input, so it is still running when the kill comes.
    time.sleep(random.Random(seed).uniform(0, count * 2 * pause))
    kill(worker)
    with JobView.open(job) as view:
        assert view.summary().done < count

    rerun = run_python(WORKER, job, out, count, pause)
    assert rerun.returncode == 0, rerun.stderr

    keys = [f"utt{i:03d}" for i in range(count)]
    assert sorted(os.listdir(out)) == [f"{key}.txt" for key in keys]
    for key in keys:
        assert (out / f"{key}.txt").read_text() == f"transcript of {key}\n"
    with JobView.open(job) as view:
        items = view.items()
    assert [(item.key, item.state, item.outputs) for item in items] == [
        (key, "done", (str(out / f"{key}.txt"),)) for key in keys
    ]
    # Done inputs were skipped by the rerun: at most the one the kill interrupted ran twice.
    assert sum(item.attempts for item in items) <= count + 1
