"""Parity with funasr 1.4.16 at the published sizes (about 1 GB per model; marked slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.oracle import funasr_transcribe
from tests.test_parity import assert_same, chinese_hotwords
from zhuanxie.generator import write_random_model
from zhuanxie.recognizer import Recognizer, load_model

pytestmark = pytest.mark.slow


@pytest.fixture(
    scope="module", params=["paraformer-large", "bicif-paraformer-large", "seaco-paraformer-large"]
)
def large(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Recognizer]]:
    path = write_random_model(tmp_path_factory.mktemp(request.param), request.param, seed=11)
    yield path, Recognizer(load_model(path))
    for file in path.iterdir():
        file.unlink()  # a gigabyte each: do not keep them until the session ends


def test_large_models_decode_like_the_reference(
    large: tuple[Path, Recognizer], speech_clips: list[np.ndarray]
) -> None:
    path, recognizer = large
    upsampled = recognizer.model.dims.predictor.upsample_times > 0
    for wave in speech_clips[:4]:
        ref = funasr_transcribe(path, wave, output_timestamp=True)
        assert_same(recognizer.transcribe(wave), ref, upsampled)
    if recognizer.model.dims.seaco is not None:
        for count in (5, 60):
            hotwords = chinese_hotwords(path, count)
            for wave in speech_clips[:2]:
                ref = funasr_transcribe(path, wave, hotwords)
                assert_same(recognizer.transcribe(wave, hotwords=hotwords), ref, upsampled=True)
