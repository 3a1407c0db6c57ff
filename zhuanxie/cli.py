"""The ``zhuanxie`` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="zhuanxie",
    help="Offline Mandarin speech recognition (Paraformer / SeACo-Paraformer).",
    no_args_is_help=True,
    add_completion=False,
)
models_app = typer.Typer(help="Model directories: create, list, download.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("random")
def models_random(
    out_dir: Annotated[Path, typer.Argument(help="Directory to create (must be absent or empty).")],
    arch: Annotated[str, typer.Option(help="Architecture, e.g. seaco-paraformer-large.")],
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same files.")] = 0,
) -> None:
    """Write a seeded random model in the official FunASR layout (for tests and benchmarks)."""
    from zhuanxie.generator import ARCHS, write_random_model

    if arch not in ARCHS:
        raise typer.BadParameter(
            f"unknown arch {arch!r}; known: {', '.join(ARCHS)}", param_hint="--arch"
        )
    try:
        write_random_model(out_dir, arch, seed)
    except FileExistsError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(f"wrote random {arch} (seed {seed}) to {out_dir}")


def main() -> None:
    app()
