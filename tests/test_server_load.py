"""A brief run of the load test (bench/load.py): a real `zhuanxie serve` under more concurrent
clients than its interactive queue admits."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from zhuanxie.generator import write_random_punctuation_model

LOAD = Path(__file__).resolve().parents[1] / "bench" / "load.py"


@pytest.mark.slow
def test_overload_is_refused_cleanly_and_memory_stays_flat(
    tiny_model_dir: Callable[..., Path], tmp_path: Path
) -> None:
    model = tiny_model_dir("seaco-paraformer-tiny")
    punc = write_random_punctuation_model(tmp_path / "punc", "ct-punc-zh-tiny", 0)
    out = tmp_path / "load.json"
    command = [
        sys.executable,
        str(LOAD),
        f"--model={model}",
        f"--punc-model={punc}",
        "--clients=12",
        "--max-interactive=3",
        "--seconds=20",
        "--warmup=5",
        "--threads=1",
        f"--out={out}",
    ]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stdout + finished.stderr
    report = json.loads(out.read_text())
    assert report["transport_errors"] == 0  # every request was answered
    assert report["other_status"] == {}  # no 5xx (nor anything else) besides the refusals
    assert report["accepted"] > 20
    assert report["refused_429"] > 0  # the queue did fill: refusals were deliberate
    assert report["requests"] == report["accepted"] + report["refused_429"] + report["refused_503"]
    rss = report["rss_mib"]
    assert rss["end"] - rss["start"] < 48, rss  # flat: no growth with the number of requests
