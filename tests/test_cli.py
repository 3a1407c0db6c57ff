"""The command line, end to end with a tiny random model."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile
import srt
import webvtt
from typer.testing import CliRunner

from zhuanxie.cli import app
from zhuanxie.recognizer import load_model
from zhuanxie.writers import JSON_SCHEMA

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tiny_model_dir: Callable[..., Path]) -> Path:
    return tiny_model_dir("seaco-paraformer-tiny")


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory, speech_clips: list[np.ndarray]) -> Path:
    """Real Mandarin clips written as WAV and FLAC files."""
    folder = tmp_path_factory.mktemp("speech")
    for i, clip in enumerate(speech_clips[:4]):
        soundfile.write(folder / f"clip{i}.{'wav' if i % 2 else 'flac'}", clip, 16000)
    return folder


def transcribe(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["transcribe", *args])
    return result.exit_code, result.output


def test_every_format_is_written_and_parses(model: Path, speech_dir: Path, tmp_path: Path) -> None:
    code, output = transcribe(
        str(speech_dir), "--model", str(model), "-o", str(tmp_path), "-f", "txt,srt,vtt,json,tsv"
    )
    assert code == 0, output
    for name in ("clip0", "clip1", "clip2", "clip3"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        jsonschema.validate(data, JSON_SCHEMA)
        assert (tmp_path / f"{name}.txt").read_text().replace("\n", "") == data["text"]
        cues = list(srt.parse((tmp_path / f"{name}.srt").read_text()))
        assert cues
        assert all(c.end > c.start for c in cues)
        assert all(b.start >= a.end for a, b in itertools.pairwise(cues))
        assert all((c.end - c.start).total_seconds() <= 7.0 for c in cues)
        joined = "".join(c.content.replace("\n", "") for c in cues)
        assert joined.replace(" ", "") == data["text"].replace(" ", "")
        vtt = webvtt.from_string((tmp_path / f"{name}.vtt").read_text())
        assert len(vtt.captions) == len(cues)
        rows = (tmp_path / f"{name}.tsv").read_text().splitlines()
        assert rows[0] == "start\tend\ttext"
        assert len(rows) == 1 + len(data["segments"])


def test_outputs_go_next_to_the_inputs_by_default(
    model: Path, speech_dir: Path, tmp_path: Path
) -> None:
    target = tmp_path / "one.wav"
    target.write_bytes((speech_dir / "clip1.wav").read_bytes())
    code, output = transcribe(str(target), "--model", str(model))
    assert code == 0, output
    assert (tmp_path / "one.txt").exists()


def test_existing_results_are_skipped_unless_overwrite(
    model: Path, speech_dir: Path, tmp_path: Path
) -> None:
    args = [str(speech_dir / "clip1.wav"), "--model", str(model), "-o", str(tmp_path)]
    assert transcribe(*args)[0] == 0
    (tmp_path / "clip1.txt").write_text("stale")
    code, output = transcribe(*args)
    assert code == 0
    assert "1 inputs already have results" in output
    assert (tmp_path / "clip1.txt").read_text() == "stale"
    assert transcribe(*args, "--overwrite")[0] == 0
    assert (tmp_path / "clip1.txt").read_text() != "stale"


def broken_inputs(folder: Path) -> dict[str, Path]:
    """A corpus of broken files, each of which must fail alone with a clear message."""
    folder.mkdir()
    good = np.sin(np.arange(16000) / 10).astype(np.float32) * 0.1
    files = {}
    files["empty"] = folder / "empty.wav"
    files["empty"].write_bytes(b"")
    soundfile.write(folder / "whole.wav", good, 16000)
    data = (folder / "whole.wav").read_bytes()
    files["header only"] = folder / "header.wav"
    files["header only"].write_bytes(data[:44])
    files["random bytes"] = folder / "random.mp3"
    files["random bytes"].write_bytes(np.random.default_rng(0).bytes(20000))
    files["not audio"] = folder / "notes.wav"
    files["not audio"].write_text("这不是音频文件\n" * 100)
    huge = bytearray(data)
    huge[40:44] = (0xFFFFFF00).to_bytes(4, "little")  # data chunk claims ~4 GB
    files["huge declared length"] = folder / "huge.wav"
    files["huge declared length"].write_bytes(bytes(huge))
    nan = good.copy()
    nan[100] = np.nan
    files["NaN samples"] = folder / "nan.wav"
    soundfile.write(files["NaN samples"], nan, 16000, subtype="FLOAT")
    (folder / "whole.wav").unlink()
    return files


def test_broken_inputs_fail_alone_and_the_rest_is_written(
    model: Path, speech_dir: Path, tmp_path: Path
) -> None:
    broken = broken_inputs(tmp_path / "broken")
    out = tmp_path / "out"
    code, output = transcribe(
        str(speech_dir / "clip1.wav"),
        *map(str, broken.values()),
        "--model",
        str(model),
        "-o",
        str(out),
        "--jsonl",
    )
    assert code == 1
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    by_input = {Path(line["input"]).name: line for line in lines}
    assert by_input["clip1.wav"]["ok"]
    assert (out / "clip1.txt").exists()
    failures = {
        name: by_input[path.name] for name, path in broken.items() if not by_input[path.name]["ok"]
    }
    # A truncated header or a huge declared length may still decode what is there; everything
    # else must fail, naming the file.
    assert set(failures) >= {"empty", "random bytes", "not audio", "NaN samples"}
    for name, line in failures.items():
        assert broken[name].name in line["error"], (name, line["error"])


def test_missing_paths_and_empty_folders_are_reported(
    model: Path, speech_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    code, output = transcribe(
        str(speech_dir / "clip1.wav"),
        str(tmp_path / "nowhere.wav"),
        str(tmp_path / "empty"),
        "--model",
        str(model),
        "-o",
        str(tmp_path),
    )
    assert code == 0
    assert "nowhere.wav: no such file or folder" in output
    assert "empty: folder contains no audio or video files" in output


def test_silence_gives_an_empty_transcript(model: Path, tmp_path: Path) -> None:
    soundfile.write(tmp_path / "quiet.wav", np.zeros(48000, dtype=np.float32), 16000)
    code, _ = transcribe(str(tmp_path / "quiet.wav"), "--model", str(model), "-f", "txt,json")
    assert code == 0
    assert json.loads((tmp_path / "quiet.json").read_text())["text"] == ""


def test_list_files_and_globs(model: Path, speech_dir: Path, tmp_path: Path) -> None:
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# two clips\n{speech_dir / 'clip0.flac'}\n\n{speech_dir / 'clip2.flac'}\n")
    code, _ = transcribe(
        f"@{listing}", str(speech_dir / "*.wav"), "--model", str(model), "-o", str(tmp_path / "o")
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"clip{i}.txt" for i in range(4)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "docx"], "unknown format docx"),
        (["--model", "no-such-model"], "no-such-model"),
        (["--dtype", "int4"], "dtype 'int4' is not one of"),
    ],
)
def test_usage_errors_exit_2(model: Path, speech_dir: Path, args: list[str], message: str) -> None:
    base = [str(speech_dir / "clip1.wav"), "--model", str(model)]
    code, output = (
        transcribe(*base, *args)
        if "--model" not in args
        else transcribe(str(speech_dir / "clip1.wav"), *args)
    )
    assert code == 2
    assert message in output


def test_no_inputs_is_a_usage_error(model: Path, tmp_path: Path) -> None:
    code, output = transcribe(str(tmp_path / "nothing-here"), "--model", str(model))
    assert code == 2
    assert "no input files found" in output


JOB_SCRIPT = """
import sys
from zhuanxie.cli import app
app(sys.argv[1:], standalone_mode=True)
"""


def run_job(args: list[str], out: Path | None = None, kill_at: int | None = None) -> int:
    """Run the CLI in a child process; with ``kill_at``, SIGKILL it once ``out`` holds that many
    result files (so the kill lands mid-run, whatever the machine's speed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", JOB_SCRIPT, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if kill_at is None or out is None:
        return process.wait(timeout=300)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if out.is_dir() and sum(1 for p in out.iterdir() if p.suffix == ".txt") >= kill_at:
            break
        time.sleep(0.005)
    assert process.poll() is None, "the job finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    return process.wait()


def test_a_killed_job_resumes_without_losing_or_repeating_work(
    model: Path, speech_clips: list[np.ndarray], tmp_path: Path
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(60):
        soundfile.write(inputs / f"f{i:02d}.wav", speech_clips[i % len(speech_clips)], 16000)
    reference = tmp_path / "reference"
    common = ["--model", str(model), "-q", "--threads", "1", "-f", "txt,json"]
    assert run_job(["transcribe", str(inputs), "-o", str(reference), *common]) == 0
    out, job = tmp_path / "out", tmp_path / "job"
    args = ["transcribe", str(inputs), "-o", str(out), "--job", str(job), *common]
    assert run_job(args, out, kill_at=10) == -signal.SIGKILL
    assert run_job(args, out, kill_at=35) == -signal.SIGKILL
    assert run_job(args) == 0
    produced = sorted(p.name for p in out.iterdir())
    assert produced == sorted(p.name for p in reference.iterdir())  # no temp files either
    for name in produced:
        ours, theirs = (out / name).read_text(), (reference / name).read_text()
        if name.endswith(".json"):  # the metadata names the output folder
            ours, theirs = json.loads(ours)["segments"], json.loads(theirs)["segments"]
        assert ours == theirs
    result = runner.invoke(app, ["jobs", "show", str(job)])
    assert result.exit_code == 0
    assert "done" in result.output


def test_a_job_in_use_is_refused(model: Path, speech_dir: Path, tmp_path: Path) -> None:
    from zhuanxie.jobs import JobStore

    options = {"model": str(model)}
    with JobStore.open(tmp_path / "job", options):
        code, output = transcribe(
            str(speech_dir), "--model", str(model), "--job", str(tmp_path / "job")
        )
    assert code == 2
    assert "in use" in output


def test_changing_options_on_a_job_is_refused_unless_allowed(
    model: Path, speech_dir: Path, tmp_path: Path
) -> None:
    job = str(tmp_path / "job")
    base = [str(speech_dir / "clip1.wav"), "--model", str(model), "-o", str(tmp_path), "--job", job]
    assert transcribe(*base)[0] == 0
    code, output = transcribe(*base, "-f", "srt")
    assert code == 2
    assert "formats" in output
    assert "--allow-option-change" in output
    assert transcribe(*base, "-f", "srt", "--allow-option-change")[0] == 0


def test_models_random_writes_a_loadable_directory(tmp_path: Path) -> None:
    out = tmp_path / "m"
    result = runner.invoke(
        app, ["models", "random", str(out), "--arch", "bicif-paraformer-tiny", "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    assert "wrote random bicif-paraformer-tiny (seed 4)" in result.output
    assert load_model(out).dims.family == "bicif"


def test_models_random_rejects_an_unknown_arch(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "random", str(tmp_path / "m"), "--arch", "whisper"])
    assert result.exit_code == 2
    assert "unknown arch 'whisper'" in result.output


def test_models_random_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["models", "random", str(tmp_path), "--arch", "paraformer-tiny"])
    assert result.exit_code == 2
    assert "not empty" in result.output


def test_models_list_names_every_known_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHUANXIE_CACHE", str(tmp_path))
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0
    for name in ("seaco-paraformer-large", "paraformer-large", "fsmn-vad", "ct-punc"):
        assert name in result.output


def test_an_uncached_model_name_explains_how_to_get_it(
    speech_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHUANXIE_CACHE", str(tmp_path))
    code, output = transcribe(str(speech_dir / "clip1.wav"), "--model", "paraformer-large")
    assert code == 2
    assert "zhuanxie models download paraformer-large" in output
    assert "--model /path/to/model-dir" in output


def test_eval_scores_results_against_references(tmp_path: Path) -> None:
    (tmp_path / "ref.tsv").write_text(
        "a\t甚至出现交易几乎停滞的情况\nb\task not what your country can do\n"
    )
    results = tmp_path / "results"
    results.mkdir()
    (results / "a.json").write_text(json.dumps({"text": "甚至出现交易几乎停止的情况"}))
    (results / "b.json").write_text(json.dumps({"text": "ask what your country can do for"}))
    result = runner.invoke(
        app, ["eval", str(tmp_path / "ref.tsv"), str(results), "--hotwords", "交易,country"]
    )
    assert result.exit_code == 0, result.output
    assert "CER 7.69%" in result.output
    assert "WER 28.57%" in result.output
    assert "recall 100.00%" in result.output


def test_info_reports_versions_and_devices() -> None:
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    assert "torch" in result.output
    assert "model cache" in result.output
