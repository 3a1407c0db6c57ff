"""Saved hotword lists: named files of phrases in a folder, shared by the Web UI's tabs.

Each list is ``<folder>/<name>.txt`` with one phrase per line, the format the CLI's
``--hotwords-file`` reads, so a list made in the UI works on the command line too.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from zhuanxie.hotwords import normalize_hotwords
from zhuanxie.writers import write_atomic

SUFFIX = ".txt"
MAX_NAME_LENGTH = 64
# Phrases in typed text end at a line break or a comma (ASCII or full-width, as the CLI's
# --hotwords reads them); spaces stay inside phrases ("deep learning").
_SEPARATORS = re.compile(r"[\n\r,，]")


class HotwordListError(ValueError):
    """A list name that cannot be a file name, or a list that does not exist."""


def parse_hotwords(text: str) -> tuple[str, ...]:
    """Phrases typed one per line or separated by commas: stripped, empties and repeats dropped."""
    return normalize_hotwords(_SEPARATORS.split(text))


def check_name(name: str) -> str:
    """The name, stripped, if it can name a list file; else ``HotwordListError`` saying why."""
    name = name.strip()
    if not name:
        raise HotwordListError("a hotword list needs a name")
    if len(name) > MAX_NAME_LENGTH:
        raise HotwordListError(f"a list name has at most {MAX_NAME_LENGTH} characters")
    if name.startswith(".") or any(c in name for c in '/\\:*?"<>|'):
        raise HotwordListError(
            f"list name {name!r} may not start with '.' or contain any of / \\ : * ? \" < > |"
        )
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise HotwordListError(f"list name {name!r} contains control characters")
    return name


class HotwordLists:
    """The lists saved in one folder (created on the first save)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def names(self) -> list[str]:
        """Saved list names, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob(f"*{SUFFIX}") if p.is_file())

    def load(self, name: str) -> tuple[str, ...]:
        path = self._path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise HotwordListError(f"there is no hotword list named {name.strip()!r}") from None
        return parse_hotwords(text)

    def save(self, name: str, phrases: Sequence[str]) -> tuple[str, ...]:
        """Create or replace the list (atomically); returns the phrases as stored."""
        path = self._path(name)
        stored = normalize_hotwords(phrases)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, "".join(f"{p}\n" for p in stored))
        return stored

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise HotwordListError(f"there is no hotword list named {name.strip()!r}") from None

    def _path(self, name: str) -> Path:
        return self.directory / f"{check_name(name)}{SUFFIX}"
