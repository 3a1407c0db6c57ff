"""The command line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from zhuanxie.cli import app
from zhuanxie.recognizer import load_model

runner = CliRunner()


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
