"""Batch transcription on Ray (issue #9), on a real local Ray instance with a tiny random model."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from zhuanxie import ray_jobs
from zhuanxie.audio import load_audio
from zhuanxie.cli import app
from zhuanxie.engine import AudioInput, Engine, EngineOptions
from zhuanxie.generator import write_random_punctuation_model
from zhuanxie.recognizer import load_model
from zhuanxie.result import Segment, Token, Transcript
from zhuanxie.writers import render

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'zhuanxie[ray]'")
pytest.importorskip("pyarrow", reason="needs the ray extra: pip install 'zhuanxie[ray]'")

runner = CliRunner()
CLIPS = 30
FORMATS = "txt,srt,json"
HOTWORDS = ("北京", "魔搭")


def transcribe(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["transcribe", *args])
    return result.exit_code, result.output


def summary_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def result_files(folder: Path) -> dict[Path, bytes]:
    """The result files under ``folder`` (not the done markers or the summary), by name."""
    return {
        p.relative_to(folder): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and ".zhuanxie" not in p.parts and p.name != ray_jobs.SUMMARY_NAME
    }


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Path:
    return tiny_model_dir("seaco-paraformer-tiny")


@pytest.fixture(scope="module")
def punc_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_punctuation_model(tmp_path_factory.mktemp("punc"), "ct-punc-zh-tiny", 0)


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory, speech_clips: list[np.ndarray]) -> Path:
    """CLIPS real-speech clips of 2 to 6 s (WAV and FLAC, some in a subfolder) and a file of
    garbage named broken.wav."""
    folder = tmp_path_factory.mktemp("ray-audio")
    (folder / "sub").mkdir()
    for i in range(CLIPS):
        clip = speech_clips[i % len(speech_clips)][: 16000 * (2 + i % 5)]
        name = f"{'sub/' if i % 4 == 0 else ''}clip{i:02d}.{'flac' if i % 3 == 0 else 'wav'}"
        soundfile.write(folder / name, clip, 16000)
    (folder / "broken.wav").write_bytes(b"not audio at all " * 64)
    return folder


@pytest.fixture(scope="module")
def options(model: Path, punc_model: Path) -> tuple[str, ...]:
    """The options of both runs: hotwords, punctuation and ITN included."""
    hotwords = ",".join(HOTWORDS)
    return (
        "--model",
        str(model),
        "-f",
        FORMATS,
        "--hotwords",
        hotwords,
        "--punc-model",
        str(punc_model),
        "--itn",
    )


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, audio: Path, options: tuple[str, ...]) -> Path:
    """A local `zhuanxie transcribe` run's files: written to out/, then moved to expected/ so
    that the Ray run can write to the same out/ (the JSON names its output folder)."""
    root = tmp_path_factory.mktemp("ray-run")
    out = root / "out"
    code, output = transcribe(str(audio), *options, "-o", str(out), "-q")
    assert code == 1, output  # broken.wav fails
    out.rename(root / "expected")
    return root


@pytest.fixture(scope="module")
def on_ray(
    cluster: None, local: Path, audio: Path, options: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The same command with --ray, into the same out/; its summary rows."""
    out = local / "out"
    code, output = transcribe(str(audio), *options, "-o", str(out), "--ray", "-q")
    assert code == 1, output
    return summary_rows(out / ray_jobs.SUMMARY_NAME)


def test_outputs_are_the_files_of_a_local_run_byte_for_byte(
    local: Path, on_ray: list[dict[str, Any]]
) -> None:
    expected = result_files(local / "expected")
    assert len(expected) == CLIPS * 3
    assert result_files(local / "out") == expected


def test_summary_has_a_row_per_input_with_its_duration_and_outputs(
    local: Path, audio: Path, on_ray: list[dict[str, Any]]
) -> None:
    done = [r for r in on_ray if r["status"] == "done"]
    assert len(done) == CLIPS
    for row in done:
        path = Path(row["input"])
        stem = local / "out" / path.relative_to(audio).with_suffix("")
        assert row["id"] == str(path)
        assert row["duration"] == round(soundfile.info(path).duration, 3)  # ms, as in JSON
        assert row["error"] is None
        assert row["outputs"] == [f"{stem}.{fmt}" for fmt in FORMATS.split(",")]


def test_a_broken_input_is_an_error_row_with_the_local_error(
    model: Path, audio: Path, on_ray: list[dict[str, Any]]
) -> None:
    broken = audio / "broken.wav"
    engine = Engine(load_model(model), EngineOptions(vad="none"))
    (expected,) = list(engine.transcribe_many([AudioInput(broken)]))
    failed = [r for r in on_ray if r["status"] != "done"]
    assert failed == [
        {
            "id": str(broken),
            "input": str(broken),
            "status": "failed",
            "duration": 0.0,
            "error": expected.error,
            "outputs": [],
        }
    ]


def test_a_rerun_skips_every_finished_input(
    local: Path, audio: Path, options: tuple[str, ...], on_ray: list[dict[str, Any]]
) -> None:
    out = local / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}
    code, output = transcribe(str(audio), *options, "-o", str(out), "--ray", "-q")
    assert code == 1, output  # broken.wav is tried again, and fails again
    assert f"{CLIPS} inputs already done (skipped)" in output
    rows = summary_rows(out / ray_jobs.SUMMARY_NAME)
    assert Counter(r["status"] for r in rows) == {"skipped": CLIPS, "failed": 1}
    assert [r["duration"] for r in rows if r["status"] == "skipped"] == [
        r["duration"] for r in on_ray if r["status"] == "done"
    ]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")} == before


def test_changed_options_redo_an_input(cluster: None, model: Path, tmp_path: Path) -> None:
    clip = tmp_path / "a.wav"
    soundfile.write(clip, np.zeros(16000, np.float32), 16000)
    items, _ = ray_jobs.items_from_paths([str(clip)], str(tmp_path / "out"))
    job = ray_jobs.RayJob(items, str(tmp_path / "out"), ray_jobs.ModelSettings(str(model)))
    statuses = []
    for formats in (("txt",), ("txt",), ("txt", "tsv")):
        report = ray_jobs.run_job(replace(job, formats=formats))
        statuses.append(report.rows[0].status)
    assert statuses == ["done", "skipped", "done"]
    # The txt-only marker is gone: that run's txt was just rewritten, so it would be redone too.
    (marker,) = (tmp_path / "out" / ".zhuanxie" / "done").iterdir()
    assert marker.name == ray_jobs.marker_name(items[0], replace(job, formats=("txt", "tsv")))


def processes(title: str) -> list[int]:
    """Pids of this machine's processes whose command line contains ``title`` (Linux)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if title in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker's pid in /proc")
def test_a_killed_model_worker_is_restarted_and_the_job_completes(
    cluster: None, local: Path, audio: Path, model: Path, punc_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    items, _ = ray_jobs.items_from_paths([str(audio)], str(out), HOTWORDS)
    settings = ray_jobs.ModelSettings(str(model))
    job = ray_jobs.RayJob(
        items, str(out), settings, ("txt", "srt"), str(punc_model), itn=True, batch_inputs=2
    )
    killed: list[int] = []

    def kill_the_worker(row: ray_jobs.SummaryRow | None, progress: ray_jobs.JobProgress) -> None:
        if row is not None and not killed:
            # (An earlier job's worker may still be exiting; killing it too does no harm.)
            for pid in processes("ray::MapWorker(MapBatches(Transcriber))"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)

    report = ray_jobs.run_job(job, progress=kill_the_worker)
    assert killed
    assert not set(killed) & set(processes("ray::MapWorker(MapBatches(Transcriber))"))
    assert Counter(r.status for r in report.rows) == {"done": CLIPS, "failed": 1}
    expected = result_files(local / "expected")
    produced = result_files(out)
    assert set(produced) == {p for p in expected if p.suffix in (".txt", ".srt")}
    assert all(produced[p] == expected[p] for p in produced)


def test_a_stopped_driver_resumes_where_it_stopped(
    cluster: None, audio: Path, model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    items, _ = ray_jobs.items_from_paths([str(audio)], str(out))
    job = ray_jobs.RayJob(items, str(out), ray_jobs.ModelSettings(str(model)), batch_inputs=2)
    seen: list[str] = []  # inputs done before the driver stopped
    reported: list[str] = []  # and failed ones

    def stop_after_five(row: ray_jobs.SummaryRow | None, progress: ray_jobs.JobProgress) -> None:
        if row is not None:
            reported.append(row.id)
            if row.status == "done":
                seen.append(row.id)
            if len(seen) == 5:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ray_jobs.run_job(job, progress=stop_after_five)
    stopped = summary_rows(out / ray_jobs.SUMMARY_NAME)
    assert [r["id"] for r in stopped if r["status"] == "done"] == [
        i.id for i in items if i.id in seen
    ]
    assert Counter(r["status"] for r in stopped)["pending"] == len(items) - len(reported)

    report = ray_jobs.run_job(job)
    skipped = {r.id for r in report.rows if r.status == "skipped"}
    assert set(seen) <= skipped  # and maybe a few more, finished after the driver stopped
    assert Counter(r.status for r in report.rows) == {
        "skipped": len(skipped),
        "done": CLIPS - len(skipped),
        "failed": 1,
    }
    assert len(result_files(out)) == CLIPS


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_manifest_items_get_their_own_hotwords(
    cluster: None, kind: str, audio: Path, model: Path, tmp_path: Path
) -> None:
    clip = audio / "clip01.wav"
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "same.wav").write_bytes(clip.read_bytes())
    records = [
        {"id": "calls/with", "path": str(clip), "uri": None, "hotwords": list(HOTWORDS)},
        {"id": "calls/without", "path": None, "uri": f"file://{clip}", "hotwords": None},
        {"id": "relative", "path": "media/same.wav", "uri": None, "hotwords": [HOTWORDS[0]]},
    ]
    manifest = tmp_path / f"list.{kind}"
    if kind == "jsonl":
        manifest.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(records), manifest)

    items = ray_jobs.items_from_manifest(str(manifest), str(tmp_path / "out"))
    job = ray_jobs.RayJob(
        items, str(tmp_path / "out"), ray_jobs.ModelSettings(str(model)), ("txt", "json")
    )
    report = ray_jobs.run_job(job)
    assert [r.status for r in report.rows] == ["done", "done", "done"]
    for name, asked in [
        ("calls/with", HOTWORDS),
        ("calls/without", ()),
        ("relative", HOTWORDS[:1]),
    ]:
        document = json.loads((tmp_path / "out" / f"{name}.json").read_text(encoding="utf-8"))
        assert document["hotwords"] == list(asked)

    engine = Engine(load_model(model))
    hotwords = [HOTWORDS, (), HOTWORDS[:1]]
    inputs = [AudioInput(clip, hotwords=h) for h in hotwords]
    transcripts = {r.index: r.transcript for r in engine.transcribe_many(inputs)}
    expected = {i: render(t, "txt", {}) for i, t in transcripts.items() if t is not None}
    assert expected[0] != expected[1]  # the hotwords change this clip's text
    for index, name in enumerate(["calls/with", "calls/without", "relative"]):
        assert (tmp_path / "out" / f"{name}.txt").read_text(encoding="utf-8") == expected[index]


# --- without Ray: inputs, files, markers, sizing ---------------------------------------------


def write_manifest(path: Path, lines: list[str]) -> str:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (
            ['{"id": "a", "path": "x.wav"}', '{"id": "a", "path": "y.wav"}'],
            "row 2: id 'a' appears twice",
        ),
        (['{"id": "../a", "path": "x.wav"}'], "row 1: id '../a' must be a relative name"),
        (['{"id": "a"}'], "row 1: needs a path or uri"),
        (['{"id": "a", "path": "x.wav", "hotwords": [1]}'], "row 1: hotwords must be a list"),
        (['{"id": "a", "path": "x.wav"}', "{oops"], "line 2: not JSON"),
    ],
)
def test_manifest_problems_name_the_row(tmp_path: Path, lines: list[str], problem: str) -> None:
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    with pytest.raises(ray_jobs.ManifestError, match=problem.replace("(", r"\(")):
        ray_jobs.items_from_manifest(manifest, str(tmp_path / "out"))


def test_manifest_hotwords_add_to_the_jobs(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [
            '{"id": "a", "path": "x.wav", "hotwords": "魔搭， 达摩院"}',
            '{"id": "b", "path": "/y.wav"}',
        ],
    )
    items = ray_jobs.items_from_manifest(manifest, "s3://bucket/out", ["北京", "魔搭"])
    assert items == [
        ray_jobs.WorkItem(
            "a", str(tmp_path / "x.wav"), "s3://bucket/out/a", ("北京", "魔搭", "达摩院")
        ),
        ray_jobs.WorkItem("b", "/y.wav", "s3://bucket/out/b", ("北京", "魔搭")),
    ]


def transcript() -> Transcript:
    tokens = (Token("你", 0.1, 0.3), Token("好", 0.3, 0.5))
    return Transcript("你好", 1.0, (Segment(0.1, 0.5, "你好", tokens, (4, 5)),))


def test_results_for_a_uri_are_written_through_fsspec() -> None:
    fsspec = pytest.importorskip("fsspec")
    metadata = {"model": "m", "options": {}, "input": "memory://in/a.wav"}
    written = ray_jobs.write_results(transcript(), "memory://zx-out/a/b", ["txt", "json"], metadata)
    assert written == ["memory://zx-out/a/b.txt", "memory://zx-out/a/b.json"]
    fs = fsspec.filesystem("memory")
    assert fs.cat_file("/zx-out/a/b.txt").decode() == render(transcript(), "txt", metadata)
    assert fs.cat_file("/zx-out/a/b.json").decode() == render(transcript(), "json", metadata)
    assert sorted(fs.ls("/zx-out/a", detail=False)) == ["/zx-out/a/b.json", "/zx-out/a/b.txt"]


def test_marker_names_change_with_what_changes_the_files() -> None:
    item = ray_jobs.WorkItem("a", "/in/a.wav", "/out/a", ("北京",))
    job = ray_jobs.RayJob([item], "/out")
    name = ray_jobs.marker_name(item, job)
    where = name.split("-")[0]
    assert ray_jobs.marker_name(item, replace(job, workers=3)) == name
    for other_item, other_job in [
        (replace(item, hotwords=()), job),
        (replace(item, input="/in/b.wav"), job),
        (item, replace(job, formats=("txt", "srt"))),
        (item, replace(job, itn=True)),
        (item, replace(job, model=ray_jobs.ModelSettings(dtype="int8"))),
    ]:
        other = ray_jobs.marker_name(other_item, other_job)
        assert other != name
        assert other.split("-")[0] == where  # the same output location


@pytest.mark.parametrize(
    ("device", "cluster_resources", "inputs", "expected"),
    [
        ("cpu", {"CPU": 2.0}, 100, (1, 1, 0)),
        ("cpu", {"CPU": 64.0}, 10_000, (12, 4, 0)),
        ("cpu", {"CPU": 64.0}, 40, (3, 4, 0)),  # no more workers than calls
        ("cuda", {"CPU": 32.0, "GPU": 4.0}, 10_000, (4, 1, 1)),
    ],
)
def test_worker_resources(
    device: str,
    cluster_resources: dict[str, float],
    inputs: int,
    expected: tuple[int, float, float],
) -> None:
    job = ray_jobs.RayJob([], "/out", ray_jobs.ModelSettings(device=device))
    assert ray_jobs.worker_resources(job, cluster_resources, inputs) == expected


def test_cuda_without_gpus_is_refused() -> None:
    job = ray_jobs.RayJob([], "/out", ray_jobs.ModelSettings(device="cuda"))
    with pytest.raises(ray_jobs.RayJobError, match="no GPU"):
        ray_jobs.worker_resources(job, {"CPU": 8.0}, 10)


def test_a_uri_parsed_as_a_path_is_restored() -> None:
    assert ray_jobs._as_uri(str(Path("s3://bucket/out"))) == "s3://bucket/out"
    assert ray_jobs._as_uri("/data/out") == "/data/out"


def test_ray_needs_an_output_folder(audio: Path) -> None:
    code, output = transcribe(str(audio), "--ray")
    assert code == 2
    assert "--ray needs -o/--output-dir" in output


def test_ray_refuses_a_local_job_record(audio: Path, tmp_path: Path) -> None:
    code, output = transcribe(
        str(audio), "--ray", "-o", str(tmp_path), "--job", str(tmp_path / "j")
    )
    assert code == 2
    assert "--job is for local runs" in output


def test_a_uri_input_is_read_and_decoded_through_fsspec(audio: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    clip = audio / "clip03.flac"
    fsspec.filesystem("memory").pipe_file("/zx-in/a.flac", clip.read_bytes())
    row = ray_jobs.decode({"id": "a", "input": "memory://zx-in/a.flac"}, max_seconds=60)
    assert row["error"] == ""
    np.testing.assert_array_equal(row["audio"], load_audio(clip))
    assert ray_jobs.decode({"input": "memory://zx-in/a.flac"}, max_seconds=1)["audio"].size == 0


def test_results_on_object_storage_are_found_again_by_a_rerun(audio: Path) -> None:
    """The finish stage's files and marker on an fsspec URI; a re-run then skips the input
    without starting Ray at all."""
    fsspec = pytest.importorskip("fsspec")
    out = "memory://zx-job/out"
    item = ray_jobs.WorkItem("a", str(audio / "clip01.wav"), f"{out}/a")
    job = ray_jobs.RayJob([item], out, formats=("txt", "json"))
    batch = {
        "id": np.array(["a"], dtype=object),
        "input": np.array([item.input], dtype=object),
        "stem": np.array([item.stem], dtype=object),
        "marker": np.array([ray_jobs.marker_name(item, job)], dtype=object),
        "error": np.array([""], dtype=object),
        "transcript": np.array([pickle.dumps(transcript())], dtype=object),
    }
    settings = ray_jobs.FinishSettings(
        job.formats, job.json_metadata(), None, False, f"{out}/{ray_jobs.STATE_DIR}"
    )
    assert list(ray_jobs.finish(batch, settings)["error"]) == [""]

    report = ray_jobs.run_job(job)
    outputs = (f"{out}/a.txt", f"{out}/a.json")
    assert report.rows == (ray_jobs.SummaryRow("a", item.input, "skipped", 1.0, None, outputs),)
    summary = fsspec.filesystem("memory").cat_file(f"/zx-job/out/{ray_jobs.SUMMARY_NAME}")
    assert json.loads(summary) == {
        "id": "a",
        "input": item.input,
        "status": "skipped",
        "duration": 1.0,
        "error": None,
        "outputs": list(outputs),
    }
