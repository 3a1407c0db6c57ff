"""Official FunASR model directories: reading the config, mapping weights, strict loading.

Every quirk of the official layout lives here: typo'd config keys (``sanm_shfit``), the
``decoder.embed.0`` key of a one-element Sequential, wrapped state dicts, training-only heads.
Loading is strict: every parameter of our model is filled exactly once, every shape is checked,
and any checkpoint key we do not use is an error unless it is listed as deliberately ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from zhuanxie.model import (
    DecoderDims,
    EncoderDims,
    Family,
    ModelDims,
    Paraformer,
    PredictorDims,
    SeacoDims,
    sequence_mask,
)

FAMILIES: dict[str, Family] = {
    "Paraformer": "paraformer",
    "BiCifParaformer": "bicif",
    "SeacoParaformer": "seaco",
}

# Official key -> our key, for the few modules whose names cannot mirror the checkpoint.
RENAMES = {"decoder.embed.0.weight": "decoder.embed.weight"}

# Checkpoint keys we read past on purpose: the CTC head is a training-time auxiliary loss that
# greedy Paraformer decoding never uses (present when model_conf.ctc_weight > 0).
IGNORED_PREFIXES = ("ctc.",)


class CheckpointError(ValueError):
    """A model directory or weight file that cannot be loaded; the message names the file."""


@dataclass(frozen=True)
class ModelFiles:
    """Where the parts of an official model directory are."""

    directory: Path
    config: Path
    weights: Path
    tokens: Path
    cmvn: Path
    seg_dict: Path | None  # only SeACo hotwords need it


def locate_files(directory: str | Path) -> ModelFiles:
    """Find the files of an official model directory, honouring ``configuration.json``."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"model directory {root} does not exist or is not a directory")
    names: dict[str, str] = {"init_param": "model.pt", "config": "config.yaml"}
    token_names = ["tokens.json", "tokens.txt"]
    cmvn_name = "am.mvn"
    seg_name = "seg_dict"
    meta_path = root / "configuration.json"
    if meta_path.exists():
        metas = read_json(meta_path).get("file_path_metas", {})
        if not isinstance(metas, dict):
            raise CheckpointError(f"{meta_path}: 'file_path_metas' must be an object")
        names.update({k: v for k, v in metas.items() if k in names and isinstance(v, str)})
        tokenizer = metas.get("tokenizer_conf", {})
        frontend = metas.get("frontend_conf", {})
        if isinstance(tokenizer, dict):
            if isinstance(tokenizer.get("token_list"), str):
                token_names = [tokenizer["token_list"]]
            if isinstance(tokenizer.get("seg_dict_file"), str):
                seg_name = tokenizer["seg_dict_file"]
        if isinstance(frontend, dict) and isinstance(frontend.get("cmvn_file"), str):
            cmvn_name = frontend["cmvn_file"]
    config = require(root / names["config"], "the model configuration")
    weights = require(root / names["init_param"], "the model weights")
    tokens = next((root / n for n in token_names if (root / n).is_file()), None)
    if tokens is None:
        raise CheckpointError(f"{root}: no token list found (looked for {', '.join(token_names)})")
    cmvn = require(root / cmvn_name, "the feature normalisation statistics (CMVN)")
    seg_dict = root / seg_name
    return ModelFiles(root, config, weights, tokens, cmvn, seg_dict if seg_dict.is_file() else None)


def require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the model directory needs {what}")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"{path} is not readable YAML: {e}") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a YAML mapping, not {type(config).__name__}")
    return config


def dims_from_config(
    config: Mapping[str, Any], vocab_size: int, source: str = "config"
) -> ModelDims:
    """Build the architecture from an official ``config.yaml`` (defaults as in the reference)."""
    family = FAMILIES.get(str(config.get("model")))
    if family is None:
        raise CheckpointError(
            f"{source}: model '{config.get('model')}' is not supported "
            f"(supported: {', '.join(FAMILIES)})"
        )
    model_conf = section(config, "model_conf", source)
    expect(config, "encoder", "SANMEncoder", source)
    expect(config, "decoder", "ParaformerSANMDecoder", source)
    if config.get("normalize") is not None:
        raise CheckpointError(f"{source}: a separate 'normalize' stage is not supported")
    if model_conf.get("share_embedding", False):
        raise CheckpointError(f"{source}: share_embedding models are not supported")
    enc = section(config, "encoder_conf", source)
    for key, want in (("input_layer", "pe"), ("selfattention_layer_type", "sanm")):
        if enc.get(key, want) != want:
            raise CheckpointError(f"{source}: encoder_conf.{key} must be '{want}'")
    if not enc.get("normalize_before", True):
        raise CheckpointError(f"{source}: encoder_conf.normalize_before must be true")
    frontend = config.get("frontend_conf") or {}
    input_size = int(config.get("input_size") or 0) or int(frontend.get("n_mels", 80)) * int(
        frontend.get("lfr_m", 1)
    )
    d_model = int(enc.get("output_size", 256))
    encoder = EncoderDims(
        input_size=input_size,
        d_model=d_model,
        heads=int(enc.get("attention_heads", 4)),
        linear_units=int(enc.get("linear_units", 2048)),
        num_blocks=int(enc.get("num_blocks", 6)),
        kernel_size=int(enc.get("kernel_size", 11)),
        sanm_shift=int(enc.get("sanm_shfit", 0)),  # sic: the reference's spelling
    )
    decoder = decoder_dims(section(config, "decoder_conf", source), d_model, vocab_size)
    predictor = predictor_dims(config, d_model, source)
    seaco = None
    if family == "seaco":
        inner = int(model_conf.get("inner_dim", 256))
        if model_conf.get("bias_encoder_type", "lstm") != "lstm" or model_conf.get(
            "bias_encoder_bid", False
        ):
            raise CheckpointError(f"{source}: only a unidirectional LSTM bias encoder is supported")
        expect(config, "seaco_decoder", "ParaformerSANMDecoder", source)
        seaco_conf = dict(section(config, "seaco_decoder_conf", source))
        if seaco_conf.get("use_output_layer", True) or not seaco_conf.get("wo_input_layer", False):
            raise CheckpointError(
                f"{source}: seaco_decoder_conf must set use_output_layer false, wo_input_layer true"
            )
        no_bias = int(model_conf.get("NO_BIAS", 8377))
        if not 0 <= no_bias < vocab_size:
            raise CheckpointError(f"{source}: NO_BIAS {no_bias} is outside the vocabulary")
        seaco = SeacoDims(
            inner_dim=inner,
            bias_layers=2,
            decoder=decoder_dims(seaco_conf, inner, None),
            no_bias_id=no_bias,
        )
    if family != "paraformer" and not predictor.upsample_times:
        raise CheckpointError(f"{source}: {config.get('model')} needs predictor CifPredictorV3")
    return ModelDims(
        family=family,
        vocab_size=vocab_size,
        encoder=encoder,
        decoder=decoder,
        predictor=predictor,
        seaco=seaco,
        sos_id=int(model_conf.get("sos", 1)),
        eos_id=int(model_conf.get("eos", 2)),
        blank_id=int(model_conf.get("blank_id", 0)),
    )


def decoder_dims(conf: Mapping[str, Any], d_model: int, vocab_size: int | None) -> DecoderDims:
    att_layer_num = int(conf.get("att_layer_num", 6))
    return DecoderDims(
        d_model=d_model,
        heads=int(conf.get("attention_heads", 4)),
        linear_units=int(conf.get("linear_units", 2048)),
        att_layer_num=att_layer_num,
        num_blocks=int(conf.get("num_blocks", 6)),
        kernel_size=int(conf.get("kernel_size", 21)),
        sanm_shift=int(conf.get("sanm_shfit", 0)),  # sic
        vocab_size=vocab_size,
    )


def predictor_dims(config: Mapping[str, Any], d_model: int, source: str) -> PredictorDims:
    name = config.get("predictor")
    conf = section(config, "predictor_conf", source)
    common = dict(
        d_model=int(conf.get("idim", d_model)),
        l_order=int(conf["l_order"]),
        r_order=int(conf["r_order"]),
        threshold=float(conf.get("threshold", 1.0)),
        tail_threshold=float(conf.get("tail_threshold", 0.0)),
        smooth_factor=float(conf.get("smooth_factor", 1.0)),
        noise_threshold=float(conf.get("noise_threshold", 0.0)),
    )
    if name == "CifPredictorV2":
        return PredictorDims(**common)  # type: ignore[arg-type]
    if name == "CifPredictorV3":
        if conf.get("upsample_type", "cnn") != "cnn_blstm" or conf.get("use_cif1_cnn", True):
            raise CheckpointError(
                f"{source}: CifPredictorV3 is supported with upsample_type cnn_blstm and "
                "use_cif1_cnn false (the published models)"
            )
        return PredictorDims(
            **common,  # type: ignore[arg-type]
            upsample_times=int(conf.get("upsample_times", 5)),
            smooth_factor2=float(conf.get("smooth_factor2", 1.0)),
            noise_threshold2=float(conf.get("noise_threshold2", 0.0)),
        )
    raise CheckpointError(f"{source}: predictor '{name}' is not supported")


def section(config: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = config.get(key) or {}
    if not isinstance(value, Mapping):
        raise CheckpointError(f"{source}: '{key}' must be a mapping")
    return value


def expect(config: Mapping[str, Any], key: str, want: str, source: str) -> None:
    if config.get(key) != want:
        raise CheckpointError(
            f"{source}: '{key}' is '{config.get(key)}', only '{want}' is supported"
        )


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read ``model.pt``: a bare state dict, or one wrapped the ways FunASR unwraps."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    # A corrupt file can fail anywhere inside the unpickler, with almost any exception type.
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable PyTorch weight file: {e}") from e
    for wrapper in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_weights(model: Paraformer, state: Mapping[str, Tensor], source: str) -> None:
    """Fill every parameter of ``model`` from an official state dict, or fail listing why."""
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    unexpected = []
    for key, value in state.items():
        target = RENAMES.get(key, key)
        if target in ours:
            mapped[target] = value
        elif not key.startswith(IGNORED_PREFIXES):
            unexpected.append(key)
    missing = sorted(set(ours) - set(mapped))
    mis_shaped = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(ours[k].shape)}"
        for k, v in mapped.items()
        if v.shape != ours[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        problems.append(
            f"unexpected keys ({len(unexpected)}): {', '.join(sorted(unexpected)[:20])}"
        )
    if mis_shaped:
        problems.append(f"shape mismatches ({len(mis_shaped)}): {'; '.join(mis_shaped[:20])}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model in config.yaml: " + " | ".join(problems)
        )
    model.load_state_dict(mapped, strict=True)


def official_state_dict(model: Paraformer) -> dict[str, Tensor]:
    """Our parameters under their official key names (what ``model.pt`` holds)."""
    inverse = {v: k for k, v in RENAMES.items()}
    return {inverse.get(k, k): v for k, v in model.state_dict().items()}


# A real Paraformer fires about 4-5 tokens per second of speech; an LFR frame is 60 ms.
REALISTIC_ALPHA = 4.5 * 0.06
# Share of token positions where a random SeACo bias branch predicts NO_BIAS (defers to the
# main decoder), so that both sides of the merge are exercised.
REALISTIC_NO_BIAS_SHARE = 0.7


@torch.no_grad()
def random_state_dict(config: Mapping[str, Any], seed: int) -> dict[str, Tensor]:
    """Seeded random weights for ``config`` (a config.yaml mapping plus ``vocab_size``), under
    the official key names, calibrated so that the model behaves like a trained one where it
    matters for speed: CIF fires about 4.5 tokens per second of audio."""
    dims = dims_from_config(config, int(config["vocab_size"]))
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = Paraformer(dims).eval()
        calibrate(model)
    finally:
        torch.random.set_rng_state(generator_state)
    return official_state_dict(model)


def calibrate(model: Paraformer) -> None:
    """Set output biases from the model's own statistics on normalised random features."""
    dims = model.dims
    feats = torch.randn(2, 200, dims.encoder.input_size)  # ~12 s at 60 ms per LFR frame
    lens = torch.tensor([200, 150])
    enc = model.encode(feats, lens)
    # Shrink the CIF head so alphas concentrate near the target rather than saturating.
    out = model.predictor.cif_output
    out.weight.mul_(0.1)
    out.bias.zero_()
    h = torch.relu(model.predictor.cif_conv1d(F.pad(enc.transpose(1, 2), (1, 1)))).transpose(1, 2)
    logits = out(h).squeeze(-1)[sequence_mask(lens, 200)]
    out.bias.fill_(solve_sigmoid_mean(logits, REALISTIC_ALPHA))
    if dims.seaco is None:
        return
    cif = model.predict(enc, lens)
    _, hidden = model.decode(enc, lens, cif.embeds, cif.token_lens)
    hotwords = model.encode_hotwords(torch.tensor([[dims.sos_id]]), torch.tensor([1]))
    bias = torch.zeros(2, 1, 1, 1)
    dha = model.bias_logits(cif.embeds, hidden, cif.token_lens, hotwords, bias)
    valid = dha[sequence_mask(cif.token_lens, dha.shape[1])]  # (tokens, V)
    no_bias = dims.seaco.no_bias_id
    others = torch.cat([valid[:, :no_bias], valid[:, no_bias + 1 :]], dim=1).max(-1).values
    margin = torch.quantile(others - valid[:, no_bias], REALISTIC_NO_BIAS_SHARE)
    model.hotword_output_layer.bias[no_bias] += margin


def solve_sigmoid_mean(logits: Tensor, target: float) -> float:
    """The bias b with mean(sigmoid(logits + b)) == target, by bisection."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if torch.sigmoid(logits + mid).mean().item() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2
