"""Known models, the local model cache, and verified downloads from ModelScope or Hugging Face.

A known model lives in ``models_dir() / NAME``. That directory only ever appears complete: a
download goes into a sibling ``NAME.<hub>.partial`` directory, is verified, and is renamed into
place in one step, so a crashed or interrupted download never looks like a usable model.

Resuming: the partial directory is kept when a download fails, and running the download again
fetches into the same directory. Both client libraries resume there: ``modelscope`` keeps
``<file>.incomplete`` next to each file and continues it with an HTTP Range request, and skips
files whose size and SHA-256 already match; ``huggingface_hub`` (``local_dir`` mode) keeps
``.cache/huggingface/download/<file>.incomplete`` and resumes it the same way.

Verification: every file the model needs must exist and be non-empty, and every file the hub
lists must have the size the hub states and, where the hub gives one, the SHA-256. Hugging Face
gives it for LFS files (the weights); older ``modelscope`` SDKs list a ``Sha256`` per file, newer
ones list only sizes but check each file's SHA-256 themselves while downloading. Files that fail
are deleted from the partial directory so that the next run fetches them again.

The client libraries are optional (``pip install 'zhuanxie[download]'``) and imported only when
a download starts; nothing here touches the network otherwise.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

Kind = Literal["asr", "vad", "punc"]
Hub = Literal["modelscope", "huggingface"]
Source = Literal["modelscope", "huggingface", "auto"]

DEFAULT_MODEL = "seaco-paraformer-large"
DOWNLOAD_EXTRA = "pip install 'zhuanxie[download]'"
HUB_NAMES: Mapping[Hub, str] = {"modelscope": "ModelScope", "huggingface": "Hugging Face"}

# What our loaders read; configuration.json, seg_dict, examples and READMEs are optional.
_ASR_FILES = ("model.pt", "config.yaml", "am.mvn", "tokens.json")


@dataclass(frozen=True)
class KnownModel:
    """A model zhuanxie knows by name, with where to get it."""

    name: str
    description: str
    kind: Kind
    modelscope_id: str | None  # None for models published on Hugging Face only (faster-whisper)
    huggingface_id: str | None  # None where no Hugging Face copy is confirmed to be this model
    files: tuple[str, ...]  # must exist and be non-empty for a directory to count as complete
    approx_bytes: int  # whole repository, for telling the user what a download costs


# faster-whisper's own names and repositories (faster_whisper/utils.py, _MODELS, in 1.2.1), each
# with what it transcribes and about how large its float16 model.bin is. zhuanxie.whisper runs them.
_WHISPER_FILES = ("model.bin", "config.json", "tokenizer.json")
_WHISPER_MODELS = (
    ("tiny", "Systran/faster-whisper-tiny", "multilingual", 75_000_000),
    ("base", "Systran/faster-whisper-base", "multilingual", 145_000_000),
    ("small", "Systran/faster-whisper-small", "multilingual", 484_000_000),
    ("medium", "Systran/faster-whisper-medium", "multilingual", 1_530_000_000),
    ("large-v3", "Systran/faster-whisper-large-v3", "multilingual", 3_090_000_000),
    (
        "large-v3-turbo",
        "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        "multilingual",
        1_620_000_000,
    ),
    ("distil-large-v3", "Systran/faster-distil-whisper-large-v3", "English only", 1_510_000_000),
)

# Repository ids are those of funasr's own alias table (funasr/download/name_maps_from_hub.py).
# Hugging Face: `funasr/paraformer-zh` holds a plain Paraformer-large (881 MB model.pt,
# CifPredictorV2) although funasr maps its SeACo alias there too, so it is listed for
# paraformer-large only; `funasr/SeACo-Paraformer-large` holds only a README. No Hugging Face
# copy of the BiCif (vad-punc) model or of the 272727-token punctuation model is confirmed.
KNOWN_MODELS: Mapping[str, KnownModel] = {
    model.name: model
    for model in (
        KnownModel(
            name="seaco-paraformer-large",
            description="SeACo-Paraformer-large: Mandarin ASR with hotwords, 220M params (default)",
            kind="asr",
            modelscope_id="iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
            huggingface_id=None,
            files=_ASR_FILES,
            approx_bytes=953_000_000,
        ),
        KnownModel(
            name="paraformer-large",
            description="Paraformer-large: Mandarin ASR, 220M params",
            kind="asr",
            modelscope_id="iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
            huggingface_id="funasr/paraformer-zh",
            files=_ASR_FILES,
            approx_bytes=890_000_000,
        ),
        KnownModel(
            name="paraformer-large-long",
            description="Paraformer-large-long (BiCif): Mandarin ASR with a timestamp predictor, 220M params",
            kind="asr",
            modelscope_id="iic/speech_paraformer-large-vad-punc_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
            huggingface_id=None,
            files=_ASR_FILES,
            approx_bytes=900_000_000,
        ),
        KnownModel(
            name="fsmn-vad",
            description="FSMN-VAD: voice activity detection, 0.4M params",
            kind="vad",
            modelscope_id="iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
            huggingface_id="funasr/fsmn-vad",
            files=("model.pt", "config.yaml", "am.mvn"),
            approx_bytes=4_000_000,
        ),
        KnownModel(
            name="ct-punc",
            description="CT-Transformer punctuation, Chinese and English, 471067-token vocabulary",
            kind="punc",
            modelscope_id="iic/punc_ct-transformer_cn-en-common-vocab471067-large",
            huggingface_id="funasr/ct-punc",
            files=("model.pt", "config.yaml", "tokens.json"),
            approx_bytes=1_140_000_000,
        ),
        KnownModel(
            name="ct-punc-zh",
            description="CT-Transformer punctuation, Chinese, 272727-token vocabulary (smaller)",
            kind="punc",
            modelscope_id="iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch",
            huggingface_id=None,
            files=("model.pt", "config.yaml", "tokens.json"),
            approx_bytes=300_000_000,
        ),
        *(
            KnownModel(
                name=name,
                description=f"Whisper {name} (CTranslate2, faster-whisper): ASR, {languages}",
                kind="asr",
                modelscope_id=None,
                huggingface_id=repo,
                files=_WHISPER_FILES,
                approx_bytes=size,
            )
            for name, repo, languages, size in _WHISPER_MODELS
        ),
    )
}


class FileSpec(NamedTuple):
    """What a hub says about one file; None where it does not say."""

    size: int | None
    sha256: str | None


# Relative POSIX path inside the repository -> what the hub states about that file.
Manifest = Mapping[str, FileSpec]


class Fetch(Protocol):
    """Downloads repository `repo_id` into `directory` and returns the hub's manifest of it.

    Must be resumable: called again on the same directory after a failure, it continues.
    """

    def __call__(self, repo_id: str, directory: Path, revision: str | None) -> Manifest: ...


class ModelNotFoundError(LookupError):
    """A model name or path that does not lead to a model directory; says what to do."""


class DownloadError(RuntimeError):
    """A download that could not be completed; the partial directory is kept for resuming."""


class VerificationError(DownloadError):
    """Downloaded files that are missing, empty, of the wrong size or the wrong checksum."""


@dataclass(frozen=True)
class ModelStatus:
    """A known model and whether it is in the local cache."""

    name: str
    description: str
    kind: Kind
    present: bool
    path: Path


def models_dir() -> Path:
    """The model cache: ``$ZHUANXIE_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/zhuanxie/models``."""
    override = os.environ.get("ZHUANXIE_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "zhuanxie" / "models"


def known_model(name: str) -> KnownModel:
    """The known model called `name`; ModelNotFoundError lists the known names otherwise."""
    if name not in KNOWN_MODELS:
        raise ModelNotFoundError(
            f"unknown model {name!r}; known models: {', '.join(KNOWN_MODELS)} "
            "(or pass --model /path/to/model-dir)"
        )
    return KNOWN_MODELS[name]


def model_path(name: str, cache_dir: Path | None = None) -> Path:
    """Where known model `name` lives in the cache (whether or not it is there)."""
    return (cache_dir if cache_dir is not None else models_dir()) / known_model(name).name


def missing_files(directory: Path, model: KnownModel) -> list[str]:
    """The files of `model` that `directory` lacks or holds empty."""
    return [
        name
        for name in model.files
        if not (directory / name).is_file() or (directory / name).stat().st_size == 0
    ]


def resolve_model(name_or_path: str, *, cache_dir: Path | None = None) -> Path:
    """The model directory for ``--model``: an existing directory, or a cached known model.

    Raises ModelNotFoundError with the fix: the download command for a known model that is not
    cached, the known names for anything else.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if name_or_path not in KNOWN_MODELS:
        if path.exists():
            raise ModelNotFoundError(f"--model {name_or_path}: not a directory")
        if _looks_like_path(name_or_path):
            raise ModelNotFoundError(f"--model {name_or_path}: no such model directory")
        known_model(name_or_path)  # raises, naming the known models
    model = KNOWN_MODELS[name_or_path]
    target = model_path(model.name, cache_dir)
    if not target.is_dir():
        raise ModelNotFoundError(
            f"model {model.name!r} is not downloaded (looked in {target}).\n"
            f"  Download it ({_approx_size(model.approx_bytes)}):  zhuanxie models download {model.name}\n"
            "  or use a model directory you already have:  --model /path/to/model-dir"
        )
    missing = missing_files(target, model)
    if missing:
        raise ModelNotFoundError(
            f"model directory {target} is incomplete (missing or empty: {', '.join(missing)}); "
            f"delete it and run: zhuanxie models download {model.name}"
        )
    return target


def list_models(*, cache_dir: Path | None = None) -> list[ModelStatus]:
    """Every known model, marked present when its cached directory is complete."""
    statuses = []
    for model in KNOWN_MODELS.values():
        path = model_path(model.name, cache_dir)
        present = path.is_dir() and not missing_files(path, model)
        statuses.append(ModelStatus(model.name, model.description, model.kind, present, path))
    return statuses


def check_files(
    directory: Path, manifest: Manifest, required: Iterable[str] = ()
) -> dict[str, str]:
    """The files of `directory` that fail checks, each with the reason; empty when all pass.

    Required files must exist and be non-empty; manifest files must exist with the stated size
    and, where stated, SHA-256.
    """
    problems: dict[str, str] = {}
    for name in required:
        path = directory / name
        if not path.is_file():
            problems[name] = "missing"
        elif path.stat().st_size == 0:
            problems[name] = "empty"
    for name, spec in manifest.items():
        path = directory / name
        if name in problems:
            continue
        if not path.is_file():
            problems[name] = "missing"
            continue
        size = path.stat().st_size
        if spec.size is not None and size != spec.size:
            problems[name] = f"size {size} bytes, expected {spec.size}"
        elif spec.sha256 is not None and (digest := sha256_of(path)) != spec.sha256.lower():
            problems[name] = f"sha256 {digest}, expected {spec.sha256.lower()}"
    return problems


def verify_files(directory: Path, manifest: Manifest, required: Iterable[str] = ()) -> None:
    """Raise VerificationError naming every file of `directory` that fails `check_files`."""
    problems = check_files(directory, manifest, required)
    if problems:
        details = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise VerificationError(f"{directory}: {len(problems)} file(s) failed checks: {details}")


def sha256_of(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (weights are ~1 GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    name: str,
    *,
    source: Source = "auto",
    cache_dir: Path | None = None,
    revision: str | None = None,
    progress: Callable[[str], None] | None = None,
    fetchers: Mapping[Hub, Fetch] | None = None,
) -> Path:
    """Download known model `name` into the cache, verify it, and return its directory.

    `source` "auto" tries ModelScope (the official home of every known model), then Hugging
    Face where the model has a copy there. An already complete cached model is returned without
    touching the network. `progress` receives one line per stage (the client libraries draw
    their own byte-level bars). `fetchers` replaces the hub clients (tests use fakes).
    """
    model = known_model(name)
    target = model_path(model.name, cache_dir)
    report = progress or (lambda _message: None)
    if target.is_dir():
        missing = missing_files(target, model)
        if not missing:
            report(f"{model.name} is already in {target}")
            return target
        raise DownloadError(
            f"{target} exists but is incomplete (missing or empty: {', '.join(missing)}); "
            "delete it and download again"
        )
    clients: Mapping[Hub, Fetch] = fetchers or {
        "modelscope": fetch_modelscope,
        "huggingface": fetch_huggingface,
    }
    failures = []
    for hub, repo_id in _candidates(model, source):
        try:
            return _download_from(model, hub, repo_id, target, clients[hub], revision, report)
        except VerificationError:
            raise  # corrupt data is not a reason to silently switch hubs
        except DownloadError as e:
            failures.append(f"{HUB_NAMES[hub]}: {e}")
            report(f"{HUB_NAMES[hub]} failed: {e}")
    raise DownloadError(f"could not download {model.name}: " + " | ".join(failures))


def _candidates(model: KnownModel, source: Source) -> list[tuple[Hub, str]]:
    if source == "modelscope":
        if model.modelscope_id is None:
            raise DownloadError(f"{model.name} is on Hugging Face only; use --source huggingface")
        return [("modelscope", model.modelscope_id)]
    if source == "huggingface":
        if model.huggingface_id is None:
            raise DownloadError(
                f"{model.name} has no known Hugging Face copy; use --source modelscope"
            )
        return [("huggingface", model.huggingface_id)]
    if source != "auto":
        raise ValueError(f"source must be modelscope, huggingface or auto, not {source!r}")
    candidates: list[tuple[Hub, str]] = []
    if model.modelscope_id is not None:
        candidates.append(("modelscope", model.modelscope_id))
    if model.huggingface_id is not None:
        candidates.append(("huggingface", model.huggingface_id))
    return candidates


def _download_from(
    model: KnownModel,
    hub: Hub,
    repo_id: str,
    target: Path,
    fetch: Fetch,
    revision: str | None,
    report: Callable[[str], None],
) -> Path:
    # One partial directory per hub: the two hubs' files must never be mixed in one model.
    partial = target.with_name(f"{target.name}.{hub}.partial")
    partial.mkdir(parents=True, exist_ok=True)
    report(f"downloading {model.name} from {HUB_NAMES[hub]} ({repo_id}) into {partial}")
    try:
        manifest = fetch(repo_id, partial, revision)
    except Exception as e:  # the clients raise requests, OS and their own errors alike
        _remove_if_empty(partial)
        if isinstance(e, DownloadError):
            raise
        kept = partial.is_dir()
        resume = f" (files so far kept in {partial}; run the same command to resume)"
        raise DownloadError(f"{repo_id}: {type(e).__name__}: {e}{resume if kept else ''}") from e
    report(f"verifying {len(manifest)} file(s)")
    problems = check_files(partial, manifest, model.files)
    if problems:
        # Deleted so that the next run fetches them again instead of trusting them as cached.
        for name in problems:
            (partial / name).unlink(missing_ok=True)
        details = "; ".join(f"{name}: {why}" for name, why in problems.items())
        raise VerificationError(
            f"{model.name} from {HUB_NAMES[hub]} ({repo_id}) failed verification: {details}. "
            "The bad files were deleted; run the same command again to fetch them anew"
        )
    try:
        partial.rename(target)
    except OSError:
        # Another process downloading the same model got there first: it renamed the shared
        # partial directory, or put its own complete copy in place.
        if not target.is_dir() or missing_files(target, model):
            raise
        shutil.rmtree(partial, ignore_errors=True)
    report(f"{model.name} is ready in {target}")
    return target


def fetch_modelscope(repo_id: str, directory: Path, revision: str | None) -> Manifest:
    """Download a ModelScope repository into `directory` with the ``modelscope`` client."""
    try:
        from modelscope.hub.api import HubApi
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as e:
        raise DownloadError(
            f"downloading from ModelScope needs the modelscope package: {DOWNLOAD_EXTRA}"
        ) from e
    # The same explicit revision for both calls: older SDKs resolve a missing one to a release
    # tag when downloading, which could differ from the listing's.
    revision = revision or "master"
    listing = HubApi().get_model_files(repo_id, revision=revision, recursive=True)
    manifest = modelscope_manifest(listing)
    snapshot_download(repo_id, revision=revision, local_dir=str(directory))
    return manifest


def modelscope_manifest(listing: Iterable[Mapping[str, Any]]) -> Manifest:
    """A manifest from ModelScope's file listing (keys ``Path``, ``Size``, ``Sha256``, ``Type``).

    SDK versions differ in capitalisation and in whether ``Sha256`` is present; both are read.
    """
    manifest: dict[str, FileSpec] = {}
    for item in listing:
        if (item.get("Type") or item.get("type") or "blob") == "tree":
            continue
        path = item.get("Path") or item.get("path")
        if not path:
            continue
        size = item.get("Size", item.get("size"))
        sha256 = item.get("Sha256") or item.get("sha256") or None
        manifest[str(path)] = FileSpec(int(size) if size is not None else None, sha256)
    return manifest


def fetch_huggingface(repo_id: str, directory: Path, revision: str | None) -> Manifest:
    """Download a Hugging Face repository into `directory` with ``huggingface_hub``."""
    try:
        from huggingface_hub import HfApi, snapshot_download
    except ImportError as e:
        raise DownloadError(
            f"downloading from Hugging Face needs the huggingface_hub package: {DOWNLOAD_EXTRA}"
        ) from e
    info = HfApi().model_info(repo_id, revision=revision, files_metadata=True)
    manifest = {
        sibling.rfilename: FileSpec(sibling.size, sibling.lfs.sha256 if sibling.lfs else None)
        for sibling in info.siblings or []
    }
    snapshot_download(repo_id, revision=revision, local_dir=directory)
    return manifest


def _remove_if_empty(directory: Path) -> None:
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()


def _looks_like_path(text: str) -> bool:
    return any(sep in text for sep in ("/", "\\")) or text.startswith(("~", "."))


def _approx_size(n: int) -> str:
    return f"about {n / 1e9:.1f} GB" if n >= 1e9 else f"about {max(1, round(n / 1e6))} MB"
