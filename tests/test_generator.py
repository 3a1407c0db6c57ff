"""The generator writes model directories that look, parse and load like the published ones."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.conftest import TINY_ARCHS
from tests.oracle import (
    FILTERED_IDS,
    funasr_model,
    funasr_state_dict,
    funasr_transcribe,
    hotword_argument,
)
from zhuanxie.frontend import load_cmvn
from zhuanxie.generator import (
    ARCHS,
    FEATURE_DIM,
    HOTWORD_HANZI,
    LETTERS,
    OFFICIAL_FILES,
    SPECIAL_TOKENS,
    UNK_TOKEN,
    arch_config,
    arch_spec,
    build_seg_dict,
    build_token_list,
    random_cmvn,
    write_random_model,
)

LARGE_ARCHS = ("paraformer-large", "seaco-paraformer-large", "bicif-paraformer-large")
HANZI = re.compile(r"^[\u4e00-\u9fa5]$")
MakeDir = Callable[..., Path]


def noise(seconds: float, seed: int = 0) -> np.ndarray:
    """Quiet white noise at 16 kHz: enough to make random weights emit tokens."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def read_tokens(model_dir: Path) -> list[str]:
    tokens: list[str] = json.loads((model_dir / "tokens.json").read_text(encoding="utf-8"))
    return tokens


def read_seg_dict(model_dir: Path) -> dict[str, list[str]]:
    lines = (model_dir / "seg_dict").read_text(encoding="utf-8").splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines}


@pytest.fixture(params=TINY_ARCHS)
def arch(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def model_dir(tiny_model_dir: MakeDir, arch: str) -> Path:
    return tiny_model_dir(arch)


# --- files and config -------------------------------------------------------------------------


def test_writes_exactly_the_official_files(model_dir: Path) -> None:
    assert {path.name for path in model_dir.iterdir()} == OFFICIAL_FILES


def test_config_yaml_parses_to_arch_config(model_dir: Path, arch: str) -> None:
    text = (model_dir / "config.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text) == arch_config(arch)


@pytest.mark.parametrize(
    ("arch_name", "predictor", "has_seaco_decoder"),
    [
        ("paraformer-large", "CifPredictorV2", False),
        ("seaco-paraformer-large", "CifPredictorV3", True),
        ("bicif-paraformer-large", "CifPredictorV3", False),
        ("paraformer-tiny", "CifPredictorV2", False),
        ("seaco-paraformer-tiny", "CifPredictorV3", True),
        ("bicif-paraformer-tiny", "CifPredictorV3", False),
    ],
)
def test_config_names_the_family_modules(
    arch_name: str, predictor: str, has_seaco_decoder: bool
) -> None:
    config = arch_config(arch_name)
    assert config["predictor"] == predictor
    assert ("seaco_decoder_conf" in config) == has_seaco_decoder


def test_large_configs_carry_the_published_sizes() -> None:
    config = arch_config("seaco-paraformer-large")
    assert config["encoder_conf"]["output_size"] == 512
    assert config["encoder_conf"]["num_blocks"] == 50
    assert config["decoder_conf"]["num_blocks"] == config["decoder_conf"]["att_layer_num"] == 16
    assert config["seaco_decoder_conf"]["num_blocks"] == 4
    assert "att_layer_num" not in config["seaco_decoder_conf"]
    assert config["model_conf"]["NO_BIAS"] == 8377


def test_every_config_disables_dither(arch: str) -> None:
    assert arch_config(arch)["frontend_conf"]["dither"] == 0.0


def test_configuration_json_points_at_the_written_files(model_dir: Path) -> None:
    conf = json.loads((model_dir / "configuration.json").read_text(encoding="utf-8"))
    metas = conf["file_path_metas"]
    paths = [
        metas["init_param"],
        metas["config"],
        metas["tokenizer_conf"]["token_list"],
        metas["tokenizer_conf"]["seg_dict_file"],
        metas["frontend_conf"]["cmvn_file"],
    ]
    assert sorted(paths) == sorted(OFFICIAL_FILES - {"configuration.json"})


# --- vocabulary -------------------------------------------------------------------------------


def test_tokens_have_specials_first_and_unk_last(model_dir: Path, arch: str) -> None:
    tokens = read_tokens(model_dir)
    assert len(tokens) == arch_spec(arch).vocab_size
    assert tuple(tokens[:3]) == SPECIAL_TOKENS
    assert tokens[-1] == UNK_TOKEN


def test_tokens_are_unique(model_dir: Path) -> None:
    tokens = read_tokens(model_dir)
    assert len(set(tokens)) == len(tokens)


def test_tokens_mix_cjk_bpe_pieces_and_letters(model_dir: Path) -> None:
    tokens = read_tokens(model_dir)
    assert sum(bool(HANZI.match(token)) for token in tokens) > len(tokens) // 2
    assert {"pri@@", "ce", "and@@"} <= set(tokens)
    assert set(LETTERS) | {f"{letter}@@" for letter in LETTERS} <= set(tokens)


def test_every_token_is_special_cjk_or_lowercase_english(model_dir: Path) -> None:
    tokens = read_tokens(model_dir)
    body = tokens[len(SPECIAL_TOKENS) : -1]
    assert all(HANZI.match(token) or re.fullmatch(r"[a-z]+(@@)?", token) for token in body)


def test_tiny_vocab_spells_the_test_hotwords(model_dir: Path) -> None:
    assert set(HOTWORD_HANZI) <= set(read_tokens(model_dir))


def test_large_vocab_has_8404_tokens() -> None:
    tokens = build_token_list("paraformer-large")
    assert len(tokens) == len(set(tokens)) == 8404


def test_seaco_no_bias_id_is_an_ordinary_token(tiny_model_dir: MakeDir) -> None:
    model_dir = tiny_model_dir("seaco-paraformer-tiny")
    no_bias = arch_config("seaco-paraformer-tiny")["model_conf"]["NO_BIAS"]
    tokens = read_tokens(model_dir)
    assert no_bias == len(tokens) - 27
    assert tokens[no_bias] not in (*SPECIAL_TOKENS, UNK_TOKEN)


def test_seg_dict_uses_only_tokens_from_the_vocab(model_dir: Path) -> None:
    tokens = set(read_tokens(model_dir))
    pieces = {piece for value in read_seg_dict(model_dir).values() for piece in value}
    assert pieces <= tokens


def test_seg_dict_maps_every_cjk_token_to_itself(model_dir: Path) -> None:
    seg_dict = read_seg_dict(model_dir)
    hanzi = [token for token in read_tokens(model_dir) if HANZI.match(token)]
    assert all(seg_dict[char] == [char] for char in hanzi)


def test_seg_dict_splits_english_words_into_pieces(model_dir: Path) -> None:
    seg_dict = read_seg_dict(model_dir)
    assert seg_dict["price"] == ["pri@@", "ce"]
    assert seg_dict["gpu"] == ["g@@", "p@@", "u"]
    assert seg_dict["the"] == ["the"]


def test_seg_dict_entries_are_lowercase_words(arch: str) -> None:
    words = [word for word, _ in build_seg_dict(build_token_list(arch))]
    assert len(set(words)) == len(words)
    assert all(word == word.lower() for word in words)


# --- CMVN -------------------------------------------------------------------------------------


def test_am_mvn_reads_back_in_funasr_exactly(model_dir: Path) -> None:
    from funasr.frontends.wav_frontend import load_cmvn as funasr_load_cmvn

    written = random_cmvn(0)
    cmvn = funasr_load_cmvn(str(model_dir / "am.mvn"))
    assert tuple(cmvn.shape) == (2, FEATURE_DIM)
    assert torch.equal(cmvn[0], written.shift)
    assert torch.equal(cmvn[1], written.scale)


def test_am_mvn_reads_back_in_our_frontend(model_dir: Path) -> None:
    cmvn = load_cmvn(model_dir / "am.mvn")
    assert torch.equal(cmvn.shift, random_cmvn(0).shift)
    assert torch.equal(cmvn.scale, random_cmvn(0).scale)


def test_random_cmvn_has_log_mel_magnitudes() -> None:
    cmvn = random_cmvn(3)
    assert cmvn.shift.min() > -15.0
    assert cmvn.shift.max() < -7.0
    assert cmvn.scale.min() >= 0.2
    assert cmvn.scale.max() <= 0.4


def test_random_cmvn_repeats_the_80_bins_across_lfr_frames() -> None:
    shift = random_cmvn(3).shift
    assert torch.equal(shift.view(7, 80), shift[:80].expand(7, 80))


# --- weights ----------------------------------------------------------------------------------


def test_model_pt_has_funasr_model_keys_and_shapes(model_dir: Path, arch: str) -> None:
    written = torch.load(model_dir / "model.pt", weights_only=True)
    config = {**arch_config(arch), "vocab_size": arch_spec(arch).vocab_size}
    assert shapes(written) == shapes(funasr_state_dict(config, seed=1))


def test_seaco_bias_decoder_has_six_full_layers_and_an_ffn_layer(tiny_model_dir: MakeDir) -> None:
    weights = torch.load(tiny_model_dir("seaco-paraformer-tiny") / "model.pt", weights_only=True)
    layers = {key.split(".")[2] for key in weights if key.startswith("seaco_decoder.decoders.")}
    assert layers == {"0", "1", "2", "3", "4", "5"}  # forward_asf6 needs exactly these
    assert "seaco_decoder.decoders3.0.feed_forward.w_1.weight" in weights
    assert not any(key.startswith("seaco_decoder.decoders2.") for key in weights)


def test_wrapped_checkpoint_loads_into_funasr(tmp_path: Path) -> None:
    arch = "paraformer-tiny"
    model_dir = write_random_model(tmp_path / arch, arch, 5, wrap=True)
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    loaded = funasr_model(model_dir).model.state_dict()
    assert set(saved) == {"epoch", "state_dict"}
    assert all(torch.equal(loaded[key], value) for key, value in saved["state_dict"].items())


def test_same_seed_writes_byte_identical_files(tmp_path: Path) -> None:
    arch = "seaco-paraformer-tiny"
    first = write_random_model(tmp_path / "a", arch, 7)
    second = write_random_model(tmp_path / "b", arch, 7)
    for name in sorted(OFFICIAL_FILES):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_different_seed_changes_weights_and_cmvn(tiny_model_dir: MakeDir) -> None:
    first, second = tiny_model_dir("paraformer-tiny", 0), tiny_model_dir("paraformer-tiny", 1)
    weights = [torch.load(d / "model.pt", weights_only=True) for d in (first, second)]
    assert not torch.equal(
        weights[0]["decoder.output_layer.weight"], weights[1]["decoder.output_layer.weight"]
    )
    assert (first / "am.mvn").read_bytes() != (second / "am.mvn").read_bytes()
    assert (first / "tokens.json").read_bytes() == (second / "tokens.json").read_bytes()


def test_refuses_to_write_into_a_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"real weights")
    with pytest.raises(FileExistsError, match="not empty"):
        write_random_model(tmp_path, "paraformer-tiny", 0, state_dict={})


# --- specs ------------------------------------------------------------------------------------


def test_unknown_arch_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="paraformer-tiny"):
        arch_config("paraformer-huge")


def test_spec_rejects_heads_not_dividing_d_model() -> None:
    with pytest.raises(ValueError, match="divisible"):
        replace(ARCHS["paraformer-tiny"], attention_heads=5)


def test_spec_requires_seaco_width_only_for_seaco() -> None:
    with pytest.raises(ValueError, match="SeACo"):
        replace(ARCHS["paraformer-tiny"], seaco_decoder_linear_units=64)


def test_spec_rejects_vocab_too_small_for_the_token_list() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        replace(ARCHS["paraformer-tiny"], vocab_size=100)


# --- funasr loads and runs it -----------------------------------------------------------------


def test_funasr_transcribes_a_generated_model(model_dir: Path, arch: str) -> None:
    result = funasr_transcribe(model_dir, noise(3.0))
    d_model, vocab = arch_spec(arch).d_model, arch_spec(arch).vocab_size
    frames = 50  # ceil((1 + (48000 - 400) // 160) / 6) LFR frames for 3 s
    assert tuple(result.features.shape) == (frames, FEATURE_DIM)
    assert tuple(result.encoder_out.shape) == (frames, d_model)
    assert tuple(result.alphas.shape) == (frames + 1,)  # CIF appends one tail frame
    assert result.token_count >= 1
    assert tuple(result.log_probs.shape) == (result.token_count, vocab)
    assert tuple(result.acoustic_embeds.shape) == (result.token_count, d_model)


def test_oracle_ids_match_funasr_inference(model_dir: Path) -> None:
    wave = noise(3.0, seed=1)
    auto = funasr_model(model_dir)
    with torch.no_grad():
        [reference] = auto.model.inference(
            data_in=[wave],
            key=["k"],
            tokenizer=None,
            frontend=auto.kwargs["frontend"],
            device="cpu",
        )[0]
    assert funasr_transcribe(model_dir, wave).token_ids == reference["token_int"]


def test_oracle_text_agrees_with_its_tokens(model_dir: Path) -> None:
    from funasr.utils.postprocess_utils import sentence_postprocess

    result = funasr_transcribe(model_dir, noise(3.0, seed=2))
    text_from_tokens = sentence_postprocess(result.tokens)[0]
    assert "".join(result.text.split()) == "".join(text_from_tokens.split())


def test_timestamps_come_with_every_v3_model(model_dir: Path, arch: str) -> None:
    result = funasr_transcribe(model_dir, noise(3.0))
    has_timestamps = arch_spec(arch).predictor == "CifPredictorV3"
    assert bool(result.timestamps) == has_timestamps
    assert (result.upsampled_alphas is not None) == has_timestamps


def test_paraformer_timestamps_on_request(tiny_model_dir: MakeDir) -> None:
    model_dir = tiny_model_dir("paraformer-tiny")
    result = funasr_transcribe(model_dir, noise(3.0), output_timestamp=True)
    assert result.timestamps
    assert all(start <= end for start, end in result.timestamps)


def test_seaco_hotwords_are_tokenised_through_seg_dict(tiny_model_dir: MakeDir) -> None:
    model_dir = tiny_model_dir("seaco-paraformer-tiny")
    ids = {token: i for i, token in enumerate(read_tokens(model_dir))}
    result = funasr_transcribe(model_dir, noise(3.0), ["gpu", "北京"])
    assert result.hotword_ids == [
        [ids["g@@"], ids["p@@"], ids["u"]],
        [ids["北"], ids["京"]],
        [1],  # funasr always appends [sos] as the no-bias entry
    ]


def test_seaco_hotwords_change_the_distribution(tiny_model_dir: MakeDir) -> None:
    model_dir = tiny_model_dir("seaco-paraformer-tiny")
    plain = funasr_transcribe(model_dir, noise(3.0))
    biased = funasr_transcribe(model_dir, noise(3.0), ["北京"])
    assert plain.hotword_ids is None
    assert not torch.equal(plain.log_probs, biased.log_probs)


def test_oracle_rejects_hotwords_for_models_without_bias(tiny_model_dir: MakeDir) -> None:
    with pytest.raises(ValueError, match="ignores them"):
        funasr_transcribe(tiny_model_dir("paraformer-tiny"), noise(1.0), ["北京"])


@pytest.mark.parametrize(
    ("hotwords", "argument"),
    [(None, None), ([], ""), (["北京", "gpu"], "北京 gpu")],
)
def test_hotword_argument_is_one_space_separated_string(
    hotwords: list[str] | None, argument: str | None
) -> None:
    assert hotword_argument(hotwords) == argument


def test_hotword_argument_rejects_whitespace_inside_a_hotword() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        hotword_argument(["达摩 院"])


def test_filtered_ids_are_blank_sos_eos() -> None:
    assert {0, 1, 2} == FILTERED_IDS


# --- full size (slow: about 1 GB per model) ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("large_arch", LARGE_ARCHS)
def test_full_size_model_loads_and_runs_in_funasr(large_arch: str, tmp_path: Path) -> None:
    model_dir = write_random_model(tmp_path / large_arch, large_arch, 0)
    try:
        written = torch.load(model_dir / "model.pt", weights_only=True)
        config = {**arch_config(large_arch), "vocab_size": 8404}
        assert shapes(written) == shapes(funasr_state_dict(config, seed=1))
        del written
        result = funasr_transcribe(model_dir, noise(2.0))
        assert tuple(result.encoder_out.shape) == (33, 512)  # 2 s of audio
    finally:
        shutil.rmtree(model_dir)


@pytest.mark.slow
def test_paraformer_large_has_the_published_220m_parameters() -> None:
    config = {**arch_config("paraformer-large"), "vocab_size": 8404}
    count = sum(value.numel() for value in funasr_state_dict(config, seed=0).values())
    assert 219_500_000 < count < 220_500_000
