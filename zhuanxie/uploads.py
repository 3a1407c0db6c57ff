"""Files that reach the server: uploads saved under a size limit, names made safe, and
server-side paths checked against the allowed roots.

Nothing a client sends is used as a path without passing through here. Upload names keep only
their last component, with every character that could mean something to a filesystem or a
terminal replaced; server-side paths are resolved (symlinks followed) and must lie inside one
of the roots the operator allowed.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from zhuanxie.inputs import AUDIO_EXTENSIONS

CHUNK_BYTES = 1 << 20
MAX_NAME_CHARS = 120
# Letters and digits of any script, and a few separators; everything else becomes "_".
_UNSAFE = re.compile(r"[^\w.\- ]", re.UNICODE)


class UploadTooLargeError(ValueError):
    """An upload over the size limit."""

    def __init__(self, name: str, limit: int) -> None:
        super().__init__(f"{name} is larger than the server's limit of {limit / 2**20:g} MiB")
        self.name = name
        self.limit = limit


class PathNotAllowedError(ValueError):
    """A server-side path outside the allowed roots, missing, or not an audio file."""


def sanitize_filename(name: str | None, default: str = "audio") -> str:
    """A name safe as one path component and in headers: the last component of ``name``, with
    control characters, separators and anything but letters, digits, ``.``, ``-``, ``_`` and
    spaces replaced by ``_``, no leading dots, at most ``MAX_NAME_CHARS`` characters."""
    last = re.split(r"[/\\]", name or "")[-1]
    cleaned = "".join(
        "_" if unicodedata.category(c).startswith("C") else c
        for c in unicodedata.normalize("NFC", last)
    )
    cleaned = _UNSAFE.sub("_", cleaned).strip(" .")
    if len(cleaned) > MAX_NAME_CHARS:
        _, dot, suffix = cleaned.rpartition(".")
        suffix = f".{suffix}" if dot and len(suffix) <= 10 else ""
        cleaned = cleaned[: MAX_NAME_CHARS - len(suffix)].rstrip(" .") + suffix
    return cleaned or default


def save_upload(source: BinaryIO, target: Path, limit: int, name: str) -> int:
    """Copy ``source`` to ``target`` in chunks, refusing past ``limit`` bytes; the byte count.

    On any failure the partial ``target`` is removed.
    """
    written = 0
    try:
        with open(target, "xb") as out:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                if written > limit:
                    raise UploadTooLargeError(name, limit)
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return written


def inside(path: Path, roots: Sequence[Path]) -> bool:
    """Whether the resolved ``path`` lies in one of the resolved ``roots``."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_allowed(given: str, roots: Sequence[Path]) -> Path:
    """The real path of ``given`` (absolute; symlinks resolved) if it lies inside ``roots``.

    The message of a refusal never says whether something exists outside the roots.
    """
    if not roots:
        raise PathNotAllowedError(
            "this server reads no server-side paths (start it with --allowed-root DIR)"
        )
    if "\x00" in given or not os.path.isabs(given):
        raise PathNotAllowedError(f"{given!r}: give an absolute path inside an allowed root")
    resolved = Path(given).resolve()
    if not inside(resolved, roots):
        raise PathNotAllowedError(f"{given}: not inside the server's allowed roots")
    if not resolved.exists():
        raise PathNotAllowedError(f"{given}: no such file or folder")
    return resolved


def expand_allowed(given: str, roots: Sequence[Path]) -> list[Path]:
    """The audio files a server-side path names: the file itself, or the audio files found in
    the folder (recursively, sorted), each resolved and checked against ``roots`` — a symlink
    inside a root that leads out of every root is left out."""
    resolved = resolve_allowed(given, roots)
    if resolved.is_file():
        return [resolved]
    if not resolved.is_dir():
        raise PathNotAllowedError(f"{given}: not a file or folder")
    found = sorted(set(_audio_files(resolved, roots)))
    if not found:
        raise PathNotAllowedError(f"{given}: no audio files in this folder")
    return found


def _audio_files(folder: Path, roots: Sequence[Path]) -> Iterator[Path]:
    for dirpath, _dirs, files in os.walk(folder):  # does not follow symlinked folders
        for name in files:
            if name.rpartition(".")[2].lower() not in AUDIO_EXTENSIONS:
                continue
            real = Path(dirpath, name).resolve()
            if real.is_file() and inside(real, roots):
                yield real
