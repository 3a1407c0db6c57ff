"""Turning command-line arguments into input files: files, folders, globs and @list files."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Extensions searched for inside folders (explicitly named files may have any extension: the
# decoder judges by content).
AUDIO_EXTENSIONS = frozenset(
    [
        "wav",
        "flac",
        "mp3",
        "m4a",
        "aac",
        "ogg",
        "oga",
        "opus",
        "wma",
        "amr",
        "aiff",
        "aif",
        "caf",
        "webm",
        "mp4",
        "m4v",
        "mkv",
        "mov",
        "avi",
        "ts",
        "mpg",
        "mpeg",
        "3gp",
    ]
)


@dataclass(frozen=True)
class Expansion:
    """What a list of arguments names: the files found, and problems with arguments."""

    files: tuple[Path, ...]
    problems: tuple[str, ...]  # "ARGUMENT: reason", one per argument that named nothing


def expand_inputs(arguments: Sequence[str]) -> Expansion:
    """Files named by ``arguments``, each once, in argument order (folders sorted).

    An argument is a file; a folder (searched recursively for audio/video extensions); a glob
    pattern; or ``@FILE``, a text file of further arguments, one per line (``#`` comments and
    blank lines ignored; relative paths are relative to the list file's folder).
    """
    files: dict[Path, None] = {}
    problems: list[str] = []
    for argument in arguments:
        found, problem = _expand(argument, Path.cwd(), depth=0)
        files.update(dict.fromkeys(found))
        if problem:
            problems.append(problem)
    return Expansion(tuple(files), tuple(problems))


def _expand(argument: str, base: Path, depth: int) -> tuple[list[Path], str | None]:
    if argument.startswith("@"):
        return _expand_list(argument[1:], base, depth)
    path = Path(argument).expanduser()
    if not path.is_absolute():
        path = base / path
    if path.is_file():
        return [path], None
    if path.is_dir():
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower().lstrip(".") in AUDIO_EXTENSIONS
        )
        return found, None if found else f"{argument}: folder contains no audio or video files"
    if glob.has_magic(argument):
        matches = sorted(Path(p) for p in glob.glob(str(path), recursive=True))
        found = [p for p in matches if p.is_file()]
        return found, None if found else f"{argument}: pattern matches no files"
    return [], f"{argument}: no such file or folder"


def _expand_list(name: str, base: Path, depth: int) -> tuple[list[Path], str | None]:
    list_path = Path(name).expanduser()
    if not list_path.is_absolute():
        list_path = base / list_path
    if depth > 8:
        return [], f"@{name}: list files nest too deeply"
    try:
        lines = list_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        return [], f"@{name}: cannot read list file ({e})"
    found: list[Path] = []
    problems = []
    for number, line in enumerate(_entries(lines), start=1):
        paths, problem = _expand(line, list_path.parent, depth + 1)
        found += paths
        if problem:
            problems.append(f"line {number}: {problem}")
    return found, (f"@{name}: " + "; ".join(problems)) if problems else None


def _entries(lines: Iterable[str]) -> list[str]:
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def output_stem(path: Path, output_dir: Path | None, roots: Sequence[Path] = ()) -> Path:
    """Where an input's results go (without the format suffix).

    Next to the input by default; under ``output_dir`` otherwise, keeping the input's path
    relative to the folder argument it was found in (so same-named files in different folders
    never collide), or just its name.
    """
    if output_dir is None:
        return path.with_suffix("")
    for root in roots:
        if root.is_dir() and path.is_relative_to(root):
            return output_dir / path.relative_to(root).with_suffix("")
    return output_dir / path.stem
