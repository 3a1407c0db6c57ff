"""Known models, the cache, and the download flow (partial dir -> verify -> rename) with fake hubs."""

from __future__ import annotations

import hashlib
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from zhuanxie.hub import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    DownloadError,
    FileSpec,
    Manifest,
    ModelNotFoundError,
    VerificationError,
    check_files,
    download,
    fetch_huggingface,
    fetch_modelscope,
    list_models,
    models_dir,
    modelscope_manifest,
    resolve_model,
    verify_files,
)

FILES = {
    "model.pt": b"weights" * 100,
    "config.yaml": b"model: SeacoParaformer\n",
    "am.mvn": b"<Nnet>\n</Nnet>\n",
    "tokens.json": b'["<blank>", "<s>", "</s>"]',
    "example/asr_example.wav": b"RIFF....",
}


def manifest_of(files: dict[str, bytes]) -> Manifest:
    return {
        name: FileSpec(len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()
    }


class FakeHub:
    """A fetcher that writes `files` into the directory it is given, recording every call."""

    def __init__(
        self,
        files: dict[str, bytes] = FILES,
        *,
        crash_after: str | None = None,
        manifest: Manifest | None = None,
    ) -> None:
        self.files = files
        self.crash_after = crash_after
        self.manifest = manifest
        self.calls: list[tuple[str, Path, list[str]]] = []

    def __call__(self, repo_id: str, directory: Path, revision: str | None) -> Manifest:
        present = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
        self.calls.append((repo_id, directory, present))
        for name, data in self.files.items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            if name == self.crash_after:
                raise ConnectionError("connection reset by peer")
        return self.manifest if self.manifest is not None else manifest_of(self.files)


def fail_always(repo_id: str, directory: Path, revision: str | None) -> Manifest:
    raise TimeoutError(f"{repo_id} timed out")


def write_model(directory: Path, files: dict[str, bytes] = FILES) -> Path:
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return directory


def hide_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make `import name` (and its submodules, loaded or not) raise ImportError."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        monkeypatch.setitem(sys.modules, loaded, None)
    monkeypatch.setitem(sys.modules, name, None)


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# --- Known models and the cache ---------------------------------------------------------------


def test_known_models_carry_the_official_repository_ids() -> None:
    assert DEFAULT_MODEL == "seaco-paraformer-large"
    funasr = {name: m for name, m in KNOWN_MODELS.items() if m.modelscope_id is not None}
    assert {name: m.modelscope_id for name, m in funasr.items()} == {
        "seaco-paraformer-large": "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
        "paraformer-large": "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
        "paraformer-large-long": "iic/speech_paraformer-large-vad-punc_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
        "fsmn-vad": "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch",
        "ct-punc": "iic/punc_ct-transformer_cn-en-common-vocab471067-large",
        "ct-punc-zh": "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch",
    }
    assert all("model.pt" in m.files and "config.yaml" in m.files for m in funasr.values())


def test_faster_whisper_names_download_from_hugging_face_only(tmp_path: Path) -> None:
    whisper = {
        name: m.huggingface_id for name, m in KNOWN_MODELS.items() if m.modelscope_id is None
    }
    assert whisper == {
        "tiny": "Systran/faster-whisper-tiny",
        "base": "Systran/faster-whisper-base",
        "small": "Systran/faster-whisper-small",
        "medium": "Systran/faster-whisper-medium",
        "large-v3": "Systran/faster-whisper-large-v3",
        "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
        "distil-large-v3": "Systran/faster-distil-whisper-large-v3",
    }
    files = {"model.bin": b"weights", "config.json": b"{}", "tokenizer.json": b"{}"}
    hub = FakeHub(files)
    target = download(
        "tiny", cache_dir=tmp_path, fetchers={"modelscope": fail_always, "huggingface": hub}
    )
    assert [call[0] for call in hub.calls] == ["Systran/faster-whisper-tiny"]
    assert resolve_model("tiny", cache_dir=tmp_path) == target
    with pytest.raises(DownloadError, match="on Hugging Face only; use --source huggingface"):
        download("base", source="modelscope", cache_dir=tmp_path)


def test_models_dir_honours_zhuanxie_cache_then_xdg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ZHUANXIE_CACHE", str(tmp_path / "mine"))
    assert models_dir() == tmp_path / "mine"
    monkeypatch.delenv("ZHUANXIE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models_dir() == tmp_path / "xdg" / "zhuanxie" / "models"


def test_resolve_an_existing_directory_returns_it(tmp_path: Path) -> None:
    assert resolve_model(str(tmp_path)) == tmp_path


def test_resolve_a_cached_known_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHUANXIE_CACHE", str(tmp_path))
    target = write_model(tmp_path / "seaco-paraformer-large")
    assert resolve_model("seaco-paraformer-large") == target


def test_resolve_a_known_name_not_downloaded_gives_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("paraformer-large", cache_dir=tmp_path)
    message = str(info.value)
    assert "model 'paraformer-large' is not downloaded" in message
    assert str(tmp_path / "paraformer-large") in message
    assert "zhuanxie models download paraformer-large" in message
    assert "--model /path/to/model-dir" in message


def test_resolve_an_incomplete_cached_model_names_the_missing_files(tmp_path: Path) -> None:
    write_model(tmp_path / "fsmn-vad", {"model.pt": b"w", "config.yaml": b""})
    with pytest.raises(
        ModelNotFoundError, match=r"incomplete \(missing or empty: config.yaml, am.mvn\)"
    ):
        resolve_model("fsmn-vad", cache_dir=tmp_path)


def test_resolve_an_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("whisper-large", cache_dir=tmp_path)
    assert str(info.value).startswith("unknown model 'whisper-large'; known models: ")
    assert all(name in str(info.value) for name in KNOWN_MODELS)


def test_resolve_a_missing_path_or_a_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no such model directory"):
        resolve_model(str(tmp_path / "nope"), cache_dir=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        resolve_model(str(tmp_path / "file"), cache_dir=tmp_path)


def test_list_models_marks_present_and_absent(tmp_path: Path) -> None:
    write_model(tmp_path / "seaco-paraformer-large")
    write_model(tmp_path / "paraformer-large", {"model.pt": b"w"})  # incomplete
    statuses = {s.name: s for s in list_models(cache_dir=tmp_path)}
    assert list(statuses) == list(KNOWN_MODELS)
    assert [name for name, s in statuses.items() if s.present] == ["seaco-paraformer-large"]
    assert statuses["fsmn-vad"].path == tmp_path / "fsmn-vad"
    assert statuses["fsmn-vad"].kind == "vad"


# --- Verification -----------------------------------------------------------------------------


def test_verification_passes_a_matching_directory(tmp_path: Path) -> None:
    write_model(tmp_path)
    verify_files(tmp_path, manifest_of(FILES), ["model.pt", "config.yaml"])
    assert check_files(tmp_path, {"model.pt": FileSpec(None, None)}) == {}


def test_verification_names_each_bad_file(tmp_path: Path) -> None:
    write_model(tmp_path)
    (tmp_path / "empty.bin").write_bytes(b"")
    manifest = {
        "model.pt": FileSpec(len(FILES["model.pt"]), "0" * 64),
        "config.yaml": FileSpec(3, None),
        "gone.txt": FileSpec(1, None),
    }
    wrong_sha = hashlib.sha256(FILES["model.pt"]).hexdigest()
    assert check_files(tmp_path, manifest, ["empty.bin", "am.mvn"]) == {
        "empty.bin": "empty",
        "model.pt": f"sha256 {wrong_sha}, expected {'0' * 64}",
        "config.yaml": f"size {len(FILES['config.yaml'])} bytes, expected 3",
        "gone.txt": "missing",
    }
    with pytest.raises(VerificationError, match=r"4 file\(s\) failed checks: empty.bin: empty"):
        verify_files(tmp_path, manifest, ["empty.bin"])


def test_verification_accepts_upper_case_checksums(tmp_path: Path) -> None:
    write_model(tmp_path)
    digest = hashlib.sha256(FILES["am.mvn"]).hexdigest().upper()
    verify_files(tmp_path, {"am.mvn": FileSpec(None, digest)})


def test_modelscope_listing_becomes_a_manifest() -> None:
    listing = [
        {"Path": "model.pt", "Size": 12, "Sha256": "ab" * 32, "Type": "blob"},
        {"Path": "example", "Type": "tree"},
        {"path": "config.yaml", "size": 3},
        {"Path": "README.md", "Size": None},
    ]
    assert modelscope_manifest(listing) == {
        "model.pt": FileSpec(12, "ab" * 32),
        "config.yaml": FileSpec(3, None),
        "README.md": FileSpec(None, None),
    }


# --- Download flow ----------------------------------------------------------------------------


def test_download_writes_a_verified_model_and_resolves_it(tmp_path: Path) -> None:
    hub = FakeHub()
    messages: list[str] = []
    target = download(
        "seaco-paraformer-large",
        cache_dir=tmp_path,
        fetchers={"modelscope": hub, "huggingface": fail_always},
        progress=messages.append,
    )
    assert target == tmp_path / "seaco-paraformer-large"
    assert (target / "example" / "asr_example.wav").read_bytes() == FILES["example/asr_example.wav"]
    assert leftovers(tmp_path) == ["seaco-paraformer-large"]  # no partial directory left
    assert hub.calls == [
        (
            KNOWN_MODELS["seaco-paraformer-large"].modelscope_id,
            tmp_path / "seaco-paraformer-large.modelscope.partial",
            [],
        ),
    ]
    assert resolve_model("seaco-paraformer-large", cache_dir=tmp_path) == target
    assert messages[-1] == f"seaco-paraformer-large is ready in {target}"


def test_download_of_a_present_model_does_not_fetch(tmp_path: Path) -> None:
    write_model(tmp_path / "paraformer-large")
    hub = FakeHub()
    target = download("paraformer-large", cache_dir=tmp_path, fetchers={"modelscope": hub})
    assert target == tmp_path / "paraformer-large"
    assert hub.calls == []


def test_crash_mid_download_leaves_nothing_that_looks_complete_and_resumes(tmp_path: Path) -> None:
    crashing = FakeHub(crash_after="config.yaml")
    with pytest.raises(DownloadError, match="ConnectionError: connection reset by peer") as info:
        download(
            "seaco-paraformer-large",
            source="modelscope",
            cache_dir=tmp_path,
            fetchers={"modelscope": crashing},
        )
    partial = tmp_path / "seaco-paraformer-large.modelscope.partial"
    assert f"files so far kept in {partial}; run the same command to resume" in str(info.value)
    assert leftovers(tmp_path) == ["seaco-paraformer-large.modelscope.partial"]
    with pytest.raises(ModelNotFoundError, match="is not downloaded"):
        resolve_model("seaco-paraformer-large", cache_dir=tmp_path)
    assert not list_models(cache_dir=tmp_path)[0].present

    resumed = FakeHub()
    download(
        "seaco-paraformer-large",
        source="modelscope",
        cache_dir=tmp_path,
        fetchers={"modelscope": resumed},
    )
    assert resumed.calls[0][2] == ["config.yaml", "model.pt"]  # it continued in the same place
    assert resolve_model("seaco-paraformer-large", cache_dir=tmp_path).name == (
        "seaco-paraformer-large"
    )


def test_a_concurrent_download_that_finished_first_wins(tmp_path: Path) -> None:
    def other_process_finishes(repo_id: str, directory: Path, revision: str | None) -> Manifest:
        write_model(tmp_path / "fsmn-vad")
        write_model(directory)
        return manifest_of(FILES)

    target = download(
        "fsmn-vad", cache_dir=tmp_path, fetchers={"modelscope": other_process_finishes}
    )
    assert target == tmp_path / "fsmn-vad"
    assert leftovers(tmp_path) == ["fsmn-vad"]


def test_checksum_mismatch_is_rejected_naming_the_file(tmp_path: Path) -> None:
    manifest = dict(manifest_of(FILES))
    manifest["model.pt"] = FileSpec(len(FILES["model.pt"]), "f" * 64)
    hub = FakeHub(manifest=manifest)
    with pytest.raises(VerificationError, match=r"model.pt: sha256 [0-9a-f]{64}, expected f{64}"):
        download(
            "seaco-paraformer-large",
            cache_dir=tmp_path,
            fetchers={"modelscope": hub, "huggingface": FakeHub()},
        )
    partial = tmp_path / "seaco-paraformer-large.modelscope.partial"
    assert leftovers(tmp_path) == [partial.name]
    assert not (partial / "model.pt").exists()  # deleted so a rerun fetches it again
    assert (partial / "config.yaml").exists()
    assert len(hub.calls) == 1  # corrupt data does not trigger a switch to the other hub


def test_missing_required_file_is_rejected(tmp_path: Path) -> None:
    files = {k: v for k, v in FILES.items() if k != "am.mvn"}
    with pytest.raises(VerificationError, match=r"am\.mvn: missing"):
        download(
            "paraformer-large",
            source="modelscope",
            cache_dir=tmp_path,
            fetchers={"modelscope": FakeHub(files)},
        )


def test_auto_falls_back_to_hugging_face(tmp_path: Path) -> None:
    hf = FakeHub()
    messages: list[str] = []
    target = download(
        "paraformer-large",
        cache_dir=tmp_path,
        progress=messages.append,
        fetchers={"modelscope": fail_always, "huggingface": hf},
    )
    assert target == tmp_path / "paraformer-large"
    assert hf.calls[0][:2] == (
        "funasr/paraformer-zh",
        tmp_path / "paraformer-large.huggingface.partial",
    )
    assert any(m.startswith("ModelScope failed: ") for m in messages)
    assert leftovers(tmp_path) == ["paraformer-large"]


def test_auto_without_a_hugging_face_copy_reports_the_modelscope_failure(tmp_path: Path) -> None:
    hf = FakeHub()
    with pytest.raises(
        DownloadError, match=r"could not download ct-punc-zh: ModelScope: .*timed out"
    ) as info:
        download(
            "ct-punc-zh",
            cache_dir=tmp_path,
            fetchers={"modelscope": fail_always, "huggingface": hf},
        )
    assert hf.calls == []
    assert leftovers(tmp_path) == []  # the empty partial directory is not kept
    assert "kept" not in str(info.value)


def test_hugging_face_source_needs_a_known_copy(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no known Hugging Face copy; use --source modelscope"):
        download(
            "seaco-paraformer-large",
            source="huggingface",
            cache_dir=tmp_path,
            fetchers={"huggingface": FakeHub()},
        )


def test_download_of_an_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="known models: seaco-paraformer-large"):
        download("nope", cache_dir=tmp_path)


def test_download_refuses_to_overwrite_an_incomplete_model_dir(tmp_path: Path) -> None:
    write_model(tmp_path / "fsmn-vad", {"model.pt": b"w"})
    with pytest.raises(DownloadError, match="exists but is incomplete"):
        download("fsmn-vad", cache_dir=tmp_path, fetchers={"modelscope": FakeHub()})


@pytest.mark.parametrize(
    ("module", "fetch"),
    [("modelscope", fetch_modelscope), ("huggingface_hub", fetch_huggingface)],
)
def test_missing_client_library_names_the_extra(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    fetch: Callable[[str, Path, str | None], Manifest],
) -> None:
    hide_module(monkeypatch, module)
    with pytest.raises(DownloadError, match=r"pip install 'zhuanxie\[download\]'"):
        fetch("some/repo", tmp_path, None)


def test_download_without_client_libraries_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hide_module(monkeypatch, "modelscope")
    hide_module(monkeypatch, "huggingface_hub")
    with pytest.raises(DownloadError) as info:
        download("fsmn-vad", cache_dir=tmp_path)
    message = str(info.value)
    assert "ModelScope: downloading from ModelScope needs the modelscope package" in message
    assert "Hugging Face: downloading from Hugging Face needs the huggingface_hub" in message
    assert leftovers(tmp_path) == []


# --- The real client adapters, with their network calls replaced ------------------------------


def test_fetch_modelscope_lists_then_downloads_into_the_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("modelscope", reason="the optional modelscope client is not installed")
    # modelscope's package attributes are lazy; the submodules themselves are what we import.
    ms_api = importlib.import_module("modelscope.hub.api")
    ms_snapshot = importlib.import_module("modelscope.hub.snapshot_download")

    calls: list[tuple[object, ...]] = []

    def get_model_files(self: object, model_id: str, **kwargs: object) -> list[dict[str, object]]:
        calls.append(("list", model_id, kwargs))
        return [{"Path": "model.pt", "Size": 7, "Sha256": "ab" * 32, "Type": "blob"}]

    def snapshot_download(model_id: str, **kwargs: object) -> str:
        calls.append(("download", model_id, kwargs))
        return str(kwargs["local_dir"])

    monkeypatch.setattr(ms_api.HubApi, "get_model_files", get_model_files)
    monkeypatch.setattr(ms_snapshot, "snapshot_download", snapshot_download)
    manifest = fetch_modelscope("iic/x", tmp_path, None)
    assert manifest == {"model.pt": FileSpec(7, "ab" * 32)}
    assert calls == [
        ("list", "iic/x", {"revision": "master", "recursive": True}),
        ("download", "iic/x", {"revision": "master", "local_dir": str(tmp_path)}),
    ]


def test_fetch_huggingface_reads_lfs_checksums(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf = pytest.importorskip(
        "huggingface_hub", reason="the optional huggingface_hub is not installed"
    )
    from huggingface_hub.hf_api import BlobLfsInfo, ModelInfo, RepoSibling

    siblings = [
        RepoSibling("model.pt", size=7, lfs=BlobLfsInfo(size=7, sha256="cd" * 32, pointer_size=9)),
        RepoSibling("config.yaml", size=3),
    ]
    calls: list[tuple[object, ...]] = []

    def model_info(self: object, repo_id: str, **kwargs: object) -> object:
        calls.append(("info", repo_id, kwargs))
        info = ModelInfo.__new__(ModelInfo)
        info.siblings = siblings
        return info

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append(("download", repo_id, kwargs))
        return str(kwargs["local_dir"])

    monkeypatch.setattr(hf.HfApi, "model_info", model_info)
    monkeypatch.setattr(hf, "snapshot_download", snapshot_download)
    manifest = fetch_huggingface("funasr/x", tmp_path, "main")
    assert manifest == {"model.pt": FileSpec(7, "cd" * 32), "config.yaml": FileSpec(3, None)}
    assert calls == [
        ("info", "funasr/x", {"revision": "main", "files_metadata": True}),
        ("download", "funasr/x", {"revision": "main", "local_dir": tmp_path}),
    ]
