"""Strict loading of official model directories: every failure names the file and the problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from zhuanxie.checkpoint import (
    CheckpointError,
    dims_from_config,
    load_weights,
    locate_files,
    official_state_dict,
    read_state_dict,
)
from zhuanxie.generator import arch_config, write_random_model
from zhuanxie.model import Paraformer
from zhuanxie.recognizer import load_model


@pytest.fixture
def model_dir(tmp_path: Path, tiny_model_dir) -> Path:  # type: ignore[no-untyped-def]
    """A private copy of the tiny SeACo model that a test may break."""
    target = tmp_path / "model"
    shutil.copytree(tiny_model_dir("seaco-paraformer-tiny"), target)
    return target


def edit_weights(model_dir: Path, edit) -> None:  # type: ignore[no-untyped-def]
    state = torch.load(model_dir / "model.pt", weights_only=True)
    edit(state)
    torch.save(state, model_dir / "model.pt")


def test_loads_every_tiny_arch(tiny_model_dir) -> None:  # type: ignore[no-untyped-def]
    for arch, family in [
        ("paraformer-tiny", "paraformer"),
        ("bicif-paraformer-tiny", "bicif"),
        ("seaco-paraformer-tiny", "seaco"),
    ]:
        assert load_model(tiny_model_dir(arch)).dims.family == family


def test_round_trip_keeps_every_tensor(model_dir: Path) -> None:
    model = load_model(model_dir).network
    saved = read_state_dict(model_dir / "model.pt")
    ours = official_state_dict(model)
    assert ours.keys() == saved.keys()
    assert all(torch.equal(ours[k], saved[k]) for k in saved)


def test_missing_key_is_named(model_dir: Path) -> None:
    edit_weights(model_dir, lambda s: s.pop("decoder.after_norm.weight"))
    with pytest.raises(
        CheckpointError, match=r"model\.pt.*missing keys \(1\): decoder\.after_norm\.weight"
    ):
        load_model(model_dir)


def test_wrong_shape_is_named(model_dir: Path) -> None:
    def shrink(state: dict[str, torch.Tensor]) -> None:
        state["predictor.cif_output.weight"] = torch.zeros(1, 3)

    edit_weights(model_dir, shrink)
    with pytest.raises(
        CheckpointError,
        match=r"predictor\.cif_output\.weight: checkpoint \(1, 3\), model \(1, 64\)",
    ):
        load_model(model_dir)


def test_unknown_key_is_named(model_dir: Path) -> None:
    edit_weights(model_dir, lambda s: s.update({"encoder.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): encoder\.extra\.weight"):
        load_model(model_dir)


def test_ctc_head_is_ignored_deliberately(model_dir: Path) -> None:
    edit_weights(model_dir, lambda s: s.update({"ctc.ctc_lo.weight": torch.zeros(600, 64)}))
    assert load_model(model_dir).dims.family == "seaco"


def test_wrapped_and_prefixed_state_dicts_load(model_dir: Path) -> None:
    state = torch.load(model_dir / "model.pt", weights_only=True)
    wrapped = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(wrapped, model_dir / "model.pt")
    assert load_model(model_dir).dims.family == "seaco"


def test_missing_cmvn_is_named(model_dir: Path) -> None:
    (model_dir / "am.mvn").unlink()
    with pytest.raises(CheckpointError, match=r"am\.mvn is missing.*CMVN"):
        load_model(model_dir)


def test_missing_token_list_is_named(model_dir: Path) -> None:
    (model_dir / "tokens.json").unlink()
    with pytest.raises(CheckpointError, match=r"no token list found \(looked for tokens\.json\)"):
        load_model(model_dir)


def test_garbage_weights_are_named(model_dir: Path) -> None:
    (model_dir / "model.pt").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"model\.pt is not a readable PyTorch weight file"):
        load_model(model_dir)


def test_non_tensor_weights_are_refused(model_dir: Path) -> None:
    torch.save({"weights": [1, 2, 3]}, model_dir / "model.pt")
    with pytest.raises(CheckpointError, match=r"model\.pt does not hold a state dict of tensors"):
        load_model(model_dir)


def test_unsupported_model_class_is_named(model_dir: Path) -> None:
    config = yaml.safe_load((model_dir / "config.yaml").read_text())
    config["model"] = "SenseVoiceSmall"
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(
        CheckpointError, match=r"config\.yaml: model 'SenseVoiceSmall' is not supported"
    ):
        load_model(model_dir)


def test_broken_yaml_is_named(model_dir: Path) -> None:
    (model_dir / "config.yaml").write_text("model: [unclosed")
    with pytest.raises(CheckpointError, match=r"config\.yaml is not readable YAML"):
        load_model(model_dir)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"nowhere does not exist"):
        locate_files(tmp_path / "nowhere")


def test_configuration_json_redirects_file_names(model_dir: Path) -> None:
    (model_dir / "am.mvn").rename(model_dir / "stats.mvn")
    meta = (model_dir / "configuration.json").read_text().replace('"am.mvn"', '"stats.mvn"')
    (model_dir / "configuration.json").write_text(meta)
    assert locate_files(model_dir).cmvn == model_dir / "stats.mvn"


def test_published_large_dims_match_parameter_count() -> None:
    # The published Paraformer-large has 220M parameters (FunASR model zoo).
    dims = dims_from_config(arch_config("paraformer-large"), 8404)
    params = sum(p.numel() for p in Paraformer(dims).parameters())
    assert 219e6 < params < 221e6


def test_state_dict_from_funasr_loads_into_ours(tmp_path: Path) -> None:
    from tests.oracle import funasr_state_dict

    config = {**arch_config("seaco-paraformer-tiny"), "vocab_size": 600}
    state = funasr_state_dict(config, seed=3)
    model = Paraformer(dims_from_config(config, 600))
    load_weights(model, state, "funasr")
    write_random_model(tmp_path / "m", "seaco-paraformer-tiny", 3, state_dict=state)
    assert load_model(tmp_path / "m").dims.seaco is not None
