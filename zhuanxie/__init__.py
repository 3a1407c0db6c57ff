"""zhuanxie (转写): offline Mandarin speech recognition built for throughput.

import zhuanxie
model = zhuanxie.load_model("path/to/model-dir", device="cpu", dtype="float32")
transcript = zhuanxie.Recognizer(model).transcribe(wave, hotwords=["魔搭"])
"""

from zhuanxie.checkpoint import CheckpointError
from zhuanxie.engine import AudioInput, Engine, EngineOptions, InputResult
from zhuanxie.generator import write_random_model
from zhuanxie.hotwords import HotwordWarning
from zhuanxie.recognizer import Model, Recognizer, load_model
from zhuanxie.result import Segment, Token, Transcript

__all__ = [
    "AudioInput",
    "CheckpointError",
    "Engine",
    "EngineOptions",
    "HotwordWarning",
    "InputResult",
    "Model",
    "Recognizer",
    "Segment",
    "Token",
    "Transcript",
    "load_model",
    "write_random_model",
]
