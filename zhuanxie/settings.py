"""The HTTP server's settings: flags of ``zhuanxie serve``, or ``ZHUANXIE_*`` environment variables.

Every field can be set in the environment with the ``ZHUANXIE_`` prefix (``ZHUANXIE_PORT=9000``,
``ZHUANXIE_API_KEY=...``); lists take commas (``ZHUANXIE_ALLOWED_ROOTS=/data/a,/data/b``).
Values given to the constructor (the command line's flags) win over the environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from zhuanxie.hub import DEFAULT_MODEL

MIB = 1024 * 1024


def default_data_dir() -> Path:
    """``${XDG_DATA_HOME:-~/.local/share}/zhuanxie/server``."""
    base = os.environ.get("XDG_DATA_HOME") or "~/.local/share"
    return Path(base).expanduser() / "zhuanxie" / "server"


class ServerSettings(BaseSettings):
    """What the server serves, with which limits, to whom."""

    model_config = SettingsConfigDict(env_prefix="ZHUANXIE_", extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    """Interface to listen on (0.0.0.0: every interface)."""
    port: int = Field(default=8000, ge=0, le=65535)
    models: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [DEFAULT_MODEL])
    """Models to serve (known names or directories); the first answers requests that name
    none of them. Each gets its own engine on every device of ``device``."""
    punc_model: str | None = None
    """CT-Transformer punctuation model (name or directory) for Paraformer models."""
    itn: bool = False
    """Load inverse text normalisation (numbers, dates as digits)."""
    vad: bool = True
    """Split inputs at pauses (Silero VAD, or FSMN-VAD with ``vad_model``)."""
    vad_model: str | None = None
    max_segment: float = Field(default=20.0, gt=0)
    """Longest segment handed to the model, in seconds."""
    device: str = "cpu"
    """cpu, cuda, cuda:0, or several devices: cuda:0,cuda:1 (one runner each)."""
    dtype: str = "float32"
    threads: int | None = Field(default=None, ge=1)
    """CPU threads for the model (default: all cores)."""

    max_upload_mb: float = Field(default=100.0, gt=0)
    """Largest uploaded file (MiB); bigger uploads are refused with 413 while streaming."""
    max_job_upload_mb: float = Field(default=2048.0, gt=0)
    """Largest request creating a batch job from uploads (MiB, all files together)."""
    max_audio_seconds: float = Field(default=4 * 3600.0, gt=0)
    """Longest audio accepted, per file."""
    max_job_files: int = Field(default=10_000, ge=1)
    """Most files in one batch job."""
    max_interactive: int = Field(default=32, ge=1)
    """Interactive requests admitted at once (queued or running); more get 429."""
    max_bulk: int = Field(default=100_000, ge=1)
    """Batch-job files admitted to the engine at once."""
    job_concurrency: int = Field(default=64, ge=1)
    """Files of one job handed to the engine at a time (jobs share the engine in turn)."""
    request_timeout: float = Field(default=600.0, gt=0)
    """Seconds an interactive request may take; then 504 and its work is cancelled."""

    api_key: SecretStr | None = None
    """When set, every route but /health and /ready needs ``Authorization: Bearer <key>``
    (the Web UI asks for it as its password)."""
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Browser origins allowed to call the API (``*`` for any)."""
    data_dir: Path = Field(default_factory=default_data_dir)
    """Batch jobs (records, uploads, results) and temporary uploads live here."""
    allowed_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list)
    """Folders whose files batch jobs may read by server-side path; none: no server paths."""
    ui: bool = True
    """Mount the Web UI at /ui."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("models", "cors_origins", "allowed_roots", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("allowed_roots")
    @classmethod
    def _absolute_roots(cls, roots: list[Path]) -> list[Path]:
        # Resolved once, here: every later check compares resolved paths with these.
        return [root.expanduser().resolve() for root in roots]

    @model_validator(mode="after")
    def _check(self) -> ServerSettings:
        if not self.models:
            raise ValueError("models: give at least one model (a known name or a directory)")
        if self.max_job_upload_mb < self.max_upload_mb:
            raise ValueError(
                f"max_job_upload_mb ({self.max_job_upload_mb:g}) must be at least"
                f" max_upload_mb ({self.max_upload_mb:g})"
            )
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MIB)

    @property
    def max_job_upload_bytes(self) -> int:
        return int(self.max_job_upload_mb * MIB)


def model_id(spec: str) -> str:
    """The name a served model goes by in the API: a known name as is, a directory's name."""
    path = Path(spec).expanduser()
    return path.name if path.is_dir() and path.name else spec
