"""Seeded random checkpoints in the official FunASR model-directory layout.

A generated directory holds exactly the files a published ModelScope Paraformer directory holds
(`config.yaml`, `configuration.json`, `am.mvn`, `tokens.json`, `seg_dict`, `model.pt`) and loads
unchanged in funasr's `AutoModel`, so tests and benchmarks run without any model hub. Only the
weights, the CMVN statistics and the vocabulary are made up; every structural fact (file formats,
config keys, module structure, the token-list conventions) mirrors the published models.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from zhuanxie.frontend import Cmvn, write_cmvn

OFFICIAL_FILES = frozenset(
    {"config.yaml", "configuration.json", "am.mvn", "tokens.json", "seg_dict", "model.pt"}
)

SPECIAL_TOKENS = ("<blank>", "<s>", "</s>")  # ids 0, 1, 2: blank, sos, eos in funasr
UNK_TOKEN = "<unk>"  # the last entry, by FunASR's token-list convention

# Front end of every published Paraformer: 80 log-mel bins, LFR stacking of 7 frames every 6.
N_MELS = 80
LFR_M = 7
LFR_N = 6
FEATURE_DIM = N_MELS * LFR_M  # 560, the encoder input size and the am.mvn dimension

# Published SeACo sets NO_BIAS 8377 in an 8404-token vocab; we keep the same distance from the end.
NO_BIAS_FROM_END = 27

# Structural constants shared by all published sizes (funasr templates for the three families).
ENCODER_KERNEL = 11
DECODER_KERNEL = 11
SEACO_DECODER_KERNEL = 21
# The published seaco_decoder_conf says num_blocks 4 but sets no att_layer_num, so funasr's default
# of 6 applies: 6 full layers, no `decoders2`, and `forward_asf6` indexes exactly layers 0..5.
SEACO_DECODER_NUM_BLOCKS = 4

MODEL_CLASSES = ("Paraformer", "SeacoParaformer", "BiCifParaformer")

# CJK tokens come from U+4E00..U+9FA5, the range funasr's hotword code treats as Chinese.
HANZI_FIRST, HANZI_LAST = "\u4e00", "\u9fa5"
HANZI_COUNT = ord(HANZI_LAST) - ord(HANZI_FIRST) + 1

# Characters of the words tests use as hotwords; they come first, so even a tiny vocab has them.
HOTWORD_HANZI = "北京阿里巴达摩院魔搭热词语音识别模型你好世界上海杭州深圳"
# Common simplified characters, roughly most frequent first. All lie in the range above.
COMMON_HANZI = (
    "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生自会那后能对着事"
    "其里所去行过家十用发天如然作方成者多日都三小军二无同么经法当起与好看学进种将还分此心前面又定见只"
    "主没公从知己资全理长部回很两本相新但被意开使已因度实问正合气等次由现物第头手力关向点话高给西性明"
    "做原系并外间路表真最各位特些建常门把先信打感什电通工动内想文利口政展老提百千万报入品体果制机解形"
    "加论应或化车候管情代美书市战接求保直光月比走深安何界海往边世山至身女花总结克产任连队水改少王义几"
    "联热业领传重完计示命元目城单立张认革统条便区指议强准组治阶教育级规受社决史质达音究识期委清调团术"
    "院备持料必且共算青空思切装型约格观研务除红反容线支斯商际即放声属非称员技始况验难该速节眼风复步造"
    "须众越营济布局收精读查温效集选土程米争火吃游维号写亲易值息企黑白确叫据场师许半另极积轮引科层随断"
    "南交落存呢类满轻段觉转离宣帮细望运响钱职台周药份刚群式医早般导标增照送图首参采较价兵专注严官列态"
    "需证亚乐依跟历试吗消夫斗修干请衣爱适板色饭检低击护功府杀球养喜晚健座武罗卫语别模北京阿巴摩魔搭词"
    "今谢再欢迎客服录像码杭州圳广民银股票司户数网络脑苹华春夏秋冬东左右午夜末星每钟秒快慢远近旧买卖借"
    "答听唱跳跑站坐睡醒笑哭饿渴冷痛病校朋友庭父母儿哥姐弟妹爷奶叔姨士"
)

# English words as their `@@` BPE pieces, `|` between words; a word is its pieces without `@@`
# (`pri@@ ce` is "price"), as in the published seg_dict's `price pri@@ ce` lines. Single letters
# (`a`) and letter pieces (`a@@`) join the vocab as well, so that abbreviations and spelled-out
# words (`g@@ p@@ u`) can occur as they do in the real vocab.
_ENGLISH_WORDS = """
the | and | to | of | in | is | it | ok | yes | no | good | line | app | pro | one | new
pri@@ ce | hel@@ lo | wor@@ ld | mo@@ del | spe@@ ech | ma@@ in | and@@ ro@@ id | ap@@ ple
da@@ ta | o@@ pen | sour@@ ce | py@@ thon | ser@@ vi@@ ce | mu@@ sic | vi@@ de@@ o
pho@@ ne | i@@ pho@@ ne | on@@ line | ti@@ me | mee@@ ting | te@@ am | pro@@ ject
e@@ ma@@ il | wi@@ fi | zo@@ om | de@@ ep | lear@@ ning | git@@ hub | new@@ s | a@@ i
g@@ p@@ u | c@@ p@@ u | a@@ p@@ i | fu@@ na@@ s@@ r
"""
ENGLISH_PIECES: tuple[tuple[str, ...], ...] = tuple(
    tuple(word.split()) for word in _ENGLISH_WORDS.replace("\n", "|").split("|") if word.strip()
)
LETTERS = tuple("abcdefghijklmnopqrstuvwxyz")

# A fixed shuffle mixes CJK characters and English pieces so that no code can come to depend on a
# script's id range; it does not depend on the model seed, so all checkpoints of an arch share one
# token list.
_TOKEN_SHUFFLE_SEED = 8404


@dataclass(frozen=True)
class ArchSpec:
    """Sizes of one generated architecture; everything else is fixed by the published family."""

    model: str
    """Model class as written in config.yaml: Paraformer, SeacoParaformer or BiCifParaformer."""
    vocab_size: int
    """Tokens in tokens.json (V), including the specials and `<unk>`."""
    d_model: int
    """Encoder output size (D); also the decoder, predictor and SeACo inner dimension."""
    attention_heads: int
    """Heads (H) of every attention layer."""
    encoder_blocks: int
    """SANM encoder layers: `encoders0` holds the first, `encoders` the rest."""
    encoder_linear_units: int
    """Encoder feed-forward width."""
    decoder_blocks: int
    """Full decoder layers (num_blocks = att_layer_num, so no `decoders2`)."""
    decoder_linear_units: int
    """Decoder feed-forward width."""
    seaco_decoder_linear_units: int | None
    """Feed-forward width of the SeACo bias decoder; None for the other families."""
    hub_id: str
    """ModelScope id of the published model this arch mirrors (written to configuration.json)."""

    def __post_init__(self) -> None:
        if self.model not in MODEL_CLASSES:
            raise ValueError(f"model must be one of {MODEL_CLASSES}, got {self.model!r}")
        if self.d_model % self.attention_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by attention_heads "
                f"({self.attention_heads})"
            )
        if min(self.encoder_blocks, self.decoder_blocks) < 1:
            raise ValueError("encoder_blocks and decoder_blocks must be at least 1")
        if (self.model == "SeacoParaformer") != (self.seaco_decoder_linear_units is not None):
            raise ValueError("seaco_decoder_linear_units is required for, and only for, SeACo")
        minimum = len(SPECIAL_TOKENS) + len(_english_tokens()) + 1 + NO_BIAS_FROM_END
        maximum = minimum - NO_BIAS_FROM_END + HANZI_COUNT
        if not minimum <= self.vocab_size <= maximum:
            raise ValueError(
                f"vocab_size must be within [{minimum}, {maximum}], got {self.vocab_size}"
            )

    @property
    def predictor(self) -> str:
        """CIF predictor class: v3 (with the upsampled timestamp head) for SeACo and BiCif."""
        return "CifPredictorV2" if self.model == "Paraformer" else "CifPredictorV3"

    @property
    def no_bias_id(self) -> int:
        """SeACo's NO_BIAS token id: the bias branch's "no hotword here" class."""
        return self.vocab_size - NO_BIAS_FROM_END


_LARGE = {
    "vocab_size": 8404,
    "d_model": 512,
    "attention_heads": 4,
    "encoder_blocks": 50,
    "encoder_linear_units": 2048,
    "decoder_blocks": 16,
    "decoder_linear_units": 2048,
}
# Same structure at toy sizes; the SeACo bias decoder keeps its 6 full layers (see above).
_TINY = {
    "vocab_size": 600,
    "d_model": 64,
    "attention_heads": 4,
    "encoder_blocks": 4,
    "encoder_linear_units": 128,
    "decoder_blocks": 3,
    "decoder_linear_units": 128,
}
_HUB_IDS = {
    "Paraformer": "iic/speech_paraformer-large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
    "SeacoParaformer": (
        "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
    ),
    "BiCifParaformer": (
        "iic/speech_paraformer-large-vad-punc_asr_nat-zh-cn-16k-common-vocab8404-pytorch"
    ),
}


def _english_tokens() -> list[str]:
    """Every English token: letters, letter pieces, then the pieces of ENGLISH_PIECES."""
    tokens = dict.fromkeys([*LETTERS, *(f"{c}@@" for c in LETTERS)])
    for pieces in ENGLISH_PIECES:
        tokens.update(dict.fromkeys(pieces))
    return list(tokens)


def _spec(model: str, sizes: Mapping[str, int], seaco_ffn: int) -> ArchSpec:
    return ArchSpec(
        model=model,
        seaco_decoder_linear_units=seaco_ffn if model == "SeacoParaformer" else None,
        hub_id=_HUB_IDS[model],
        **sizes,
    )


ARCHS: Mapping[str, ArchSpec] = {
    "paraformer-large": _spec("Paraformer", _LARGE, 1024),
    "seaco-paraformer-large": _spec("SeacoParaformer", _LARGE, 1024),
    "bicif-paraformer-large": _spec("BiCifParaformer", _LARGE, 1024),
    "paraformer-tiny": _spec("Paraformer", _TINY, 64),
    "seaco-paraformer-tiny": _spec("SeacoParaformer", _TINY, 64),
    "bicif-paraformer-tiny": _spec("BiCifParaformer", _TINY, 64),
}


def arch_spec(arch: str) -> ArchSpec:
    """The spec of a named architecture; raises ValueError naming the known ones."""
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch]


def arch_config(arch: str) -> dict[str, Any]:
    """The full config.yaml content for `arch`, key for key as in the published config.

    Blocks that only training reads (specaug, optim, dataset, ...) are kept, so a loader meets the
    same keys it meets in a real directory. One deliberate difference: `frontend_conf.dither` is
    0.0 for every family (the published Paraformer config leaves funasr's default of 1.0 in force),
    so that funasr's features, and hence every parity test, are deterministic.
    """
    spec = arch_spec(arch)
    config: dict[str, Any] = {"model": spec.model, "model_conf": _model_conf(spec)}
    config |= {"encoder": "SANMEncoder", "encoder_conf": _encoder_conf(spec)}
    config |= {"decoder": "ParaformerSANMDecoder", "decoder_conf": _decoder_conf(spec)}
    if spec.seaco_decoder_linear_units is not None:
        config |= {
            "seaco_decoder": "ParaformerSANMDecoder",
            "seaco_decoder_conf": _seaco_decoder_conf(spec, spec.seaco_decoder_linear_units),
        }
    config |= {"predictor": spec.predictor, "predictor_conf": _predictor_conf(spec)}
    config |= {
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": N_MELS,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": LFR_M,
            "lfr_n": LFR_N,
            "dither": 0.0,
        },
    }
    config |= _training_blocks(spec)
    config |= {
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": UNK_TOKEN, "split_with_space": True},
    }
    if spec.model == "Paraformer":
        config["input_size"] = FEATURE_DIM  # only the Paraformer template spells it out
    config |= {
        "ctc_conf": {
            "dropout_rate": 0.0,
            "ctc_type": "builtin",
            "reduce": True,
            "ignore_nan_grad": True,
        },
        "normalize": None,
    }
    return config


def _model_conf(spec: ArchSpec) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "ctc_weight": 0.0,
        "lsm_weight": 0.1,
        "length_normalized_loss": True,
        "predictor_weight": 1.0,
        "predictor_bias": 1,  # the CIF count includes a trailing </s>
        "sampling_ratio": 0.75,
    }
    if spec.model == "SeacoParaformer":
        conf |= {
            "inner_dim": spec.d_model,
            "bias_encoder_type": "lstm",
            "bias_encoder_bid": False,
            "seaco_lsm_weight": 0.1,
            "seaco_length_normal": True,
            "train_decoder": True,
            "NO_BIAS": spec.no_bias_id,
        }
    return conf


def _encoder_conf(spec: ArchSpec) -> dict[str, Any]:
    return {
        "output_size": spec.d_model,
        "attention_heads": spec.attention_heads,
        "linear_units": spec.encoder_linear_units,
        "num_blocks": spec.encoder_blocks,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "attention_dropout_rate": 0.1,
        "input_layer": "pe",
        "pos_enc_class": "SinusoidalPositionEncoder",
        "normalize_before": True,
        "kernel_size": ENCODER_KERNEL,
        "sanm_shfit": 0,  # sic: funasr's spelling of "shift"
        "selfattention_layer_type": "sanm",
    }


def _decoder_conf(spec: ArchSpec) -> dict[str, Any]:
    return {
        "attention_heads": spec.attention_heads,
        "linear_units": spec.decoder_linear_units,
        "num_blocks": spec.decoder_blocks,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
        "att_layer_num": spec.decoder_blocks,
        "kernel_size": DECODER_KERNEL,
        "sanm_shfit": 0,
    }


def _seaco_decoder_conf(spec: ArchSpec, linear_units: int) -> dict[str, Any]:
    return {
        "attention_heads": spec.attention_heads,
        "linear_units": linear_units,
        "num_blocks": SEACO_DECODER_NUM_BLOCKS,
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
        "kernel_size": SEACO_DECODER_KERNEL,
        "sanm_shfit": 0,
        "use_output_layer": False,
        "wo_input_layer": True,
    }


def _predictor_conf(spec: ArchSpec) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "idim": spec.d_model,
        "threshold": 1.0,
        "l_order": 1,
        "r_order": 1,
        "tail_threshold": 0.45,
    }
    if spec.predictor == "CifPredictorV3":
        conf |= {
            "smooth_factor2": 0.25,
            "noise_threshold2": 0.01,
            "upsample_times": 3,
            "use_cif1_cnn": False,
            "upsample_type": "cnn_blstm",
        }
    return conf


def _training_blocks(spec: ArchSpec) -> dict[str, Any]:
    """specaug, train, optimiser and dataset blocks: read only by training, kept for fidelity."""
    train_conf: dict[str, Any] = {
        "accum_grad": 1,
        "grad_clip": 5,
        "max_epoch": 150,
        "val_scheduler_criterion": ["valid", "acc"],
        "best_model_criterion": [["valid", "acc", "max"]],
        "keep_nbest_models": 10,
        "log_interval": 50,
    }
    dataset_conf: dict[str, Any] = {}
    if spec.model == "SeacoParaformer":
        train_conf["unused_parameters"] = True
        dataset_conf["seaco_id"] = spec.no_bias_id
    dataset_conf |= {
        "index_ds": "IndexDSJsonl",
        "batch_sampler": "DynamicBatchLocalShuffleSampler",
        "batch_type": "example",
        "batch_size": 1,
        "max_token_length": 2048,
        "buffer_size": 500,
        "shuffle": True,
        "num_workers": 0,
    }
    return {
        "specaug": "SpecAugLFR",
        "specaug_conf": {
            "apply_time_warp": False,
            "time_warp_window": 5,
            "time_warp_mode": "bicubic",
            "apply_freq_mask": True,
            "freq_mask_width_range": [0, 30],
            "lfr_rate": LFR_N,
            "num_freq_mask": 1,
            "apply_time_mask": True,
            "time_mask_width_range": [0, 12],
            "num_time_mask": 1,
        },
        "train_conf": train_conf,
        "optim": "adam",
        "optim_conf": {"lr": 0.0005},
        "scheduler": "warmuplr",
        "scheduler_conf": {"warmup_steps": 30000},
        "dataset": "AudioDatasetHotword" if spec.model == "SeacoParaformer" else "AudioDataset",
        "dataset_conf": dataset_conf,
    }


def build_token_list(arch: str) -> list[str]:
    """The vocabulary of `arch` (V entries): specials, mixed CJK and English pieces, `<unk>`.

    CJK characters are HOTWORD_HANZI and COMMON_HANZI first, then U+4E00 upwards, as many as fit.
    """
    spec = arch_spec(arch)
    english = _english_tokens()
    n_hanzi = spec.vocab_size - len(SPECIAL_TOKENS) - len(english) - 1
    chosen = dict.fromkeys(HOTWORD_HANZI + COMMON_HANZI)
    codepoint = ord(HANZI_FIRST)
    while len(chosen) < n_hanzi:
        chosen.setdefault(chr(codepoint))
        codepoint += 1
    hanzi = list(chosen)
    body = hanzi[:n_hanzi] + english
    random.Random(_TOKEN_SHUFFLE_SEED).shuffle(body)
    return [*SPECIAL_TOKENS, *body, UNK_TOKEN]


def build_seg_dict(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """seg_dict entries (word, pieces) for a token list from `build_token_list`.

    English words map to their BPE pieces and single letters to themselves; every CJK token maps
    to itself, because funasr's SeACo hotword code looks each Chinese character up in seg_dict and
    turns a character it does not find into `<unk>`.
    """
    entries = [(_english_word(pieces), list(pieces)) for pieces in ENGLISH_PIECES]
    entries += [(letter, [letter]) for letter in LETTERS]
    entries += [(token, [token]) for token in tokens if _is_hanzi(token)]
    return entries


def _english_word(pieces: tuple[str, ...]) -> str:
    return "".join(piece.removesuffix("@@") for piece in pieces)


def _is_hanzi(token: str) -> bool:
    return len(token) == 1 and HANZI_FIRST <= token <= HANZI_LAST


def random_cmvn(seed: int) -> Cmvn:
    """Plausible global CMVN statistics for the 560-dim LFR features.

    Shift is minus a smooth per-bin log-mel mean of about 8..14, scale one over a standard deviation
    of about 2.5..5, with seeded jitter; the 80 bins repeat across the 7 stacked LFR frames, as
    they do in published am.mvn files.
    """
    generator = torch.Generator().manual_seed(seed)
    bins = torch.arange(N_MELS, dtype=torch.float64) / N_MELS
    mean = 11.0 + 2.5 * torch.sin(torch.pi * bins)
    mean += 0.4 * torch.randn(N_MELS, generator=generator, dtype=torch.float64)
    std = 3.6 + 0.8 * torch.cos(torch.pi * bins)
    std += 0.2 * torch.randn(N_MELS, generator=generator, dtype=torch.float64)
    shift = (-mean).repeat(LFR_M).float()
    scale = (1.0 / std.clamp(2.5, 5.0)).repeat(LFR_M).float()
    return Cmvn(shift=shift, scale=scale)


def configuration_json(arch: str) -> dict[str, Any]:
    """configuration.json as published: funasr joins `file_path_metas` onto the model dir."""
    return {
        "framework": "pytorch",
        "task": "auto-speech-recognition",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": arch_spec(arch).hub_id},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"},
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    }


def write_random_model(
    out_dir: Path,
    arch: str,
    seed: int,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    wrap: bool = False,
) -> Path:
    """Write a complete model directory for `arch` into `out_dir` and return `out_dir`.

    `state_dict` holds the weights under their official key names; by default they come from
    `zhuanxie.checkpoint.random_state_dict(config, seed)`, where `config` is the config.yaml
    mapping plus `vocab_size`, as funasr's AutoModel merges it. `wrap=True` saves the weights
    inside a trainer-style checkpoint (`{"epoch": ..., "state_dict": ...}`), which funasr unwraps.
    Same arguments give byte-identical files. `out_dir` must be absent or empty.
    """
    spec = arch_spec(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; refusing to write a model over it")
    config = arch_config(arch)
    if state_dict is None:
        from zhuanxie.checkpoint import random_state_dict

        state_dict = random_state_dict({**config, "vocab_size": spec.vocab_size}, seed)

    header = (
        f"# Random-weight {arch} checkpoint written by zhuanxie.generator (seed {seed}).\n"
        "# Mirrors the published config; dither is 0.0 so that features are deterministic.\n"
    )
    config_text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    (out_dir / "config.yaml").write_text(header + config_text, encoding="utf-8")
    (out_dir / "configuration.json").write_text(
        json.dumps(configuration_json(arch), indent=4, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    tokens = build_token_list(arch)
    (out_dir / "tokens.json").write_text(
        json.dumps(tokens, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    seg_lines = [f"{word} {' '.join(pieces)}\n" for word, pieces in build_seg_dict(tokens)]
    (out_dir / "seg_dict").write_text("".join(seg_lines), encoding="utf-8")
    write_cmvn(out_dir / "am.mvn", random_cmvn(seed))
    weights = {key: value.detach().clone().contiguous() for key, value in state_dict.items()}
    torch.save({"epoch": 1, "state_dict": weights} if wrap else weights, out_dir / "model.pt")
    return out_dir


# --- CT-Transformer punctuation models ----------------------------------------------------------
# The same official layout for `punc_ct-transformer_*` directories: config.yaml (`model:
# CTTransformer`, funasr's template with the published sizes), configuration.json, tokens.json,
# model.pt, and for the word-level Chinese-English model a jieba user dictionary.

PUNC_LIST = ("<unk>", "_", "，", "。", "？", "、")
SENTENCE_END_ID = 3
# Share of words after which the random models put each class of PUNC_LIST (argmax over text of
# random vocabulary words): about one sentence end in eleven words, as in transcribed speech,
# so that windows end mid-sentence often enough to exercise the carry-over.
PUNC_SHARES = (0.0, 0.80, 0.10, 0.07, 0.02, 0.01)
# Random logits are scaled up so that no two classes come within rounding error of each other.
PUNC_LOGIT_SCALE = 8.0

# Multi-character words of the jieba user dictionary of the word-level models; some are also in
# jieba's own dictionary, some only here, so both sources of cuts are exercised.
_JIEBA_USER_WORDS = (
    "语音识别 阿里巴巴 达摩院 魔搭 魔搭社区 热词 热词增强 模型 语音模型 杭州 深圳 上海 北京 你好 世界 "
    "欢迎 客服 电话 转写 转写服务 标点 标点预测 开源 开源社区 数据 数据集 会议 会议纪要 项目 团队 "
    "音乐 视频 新闻 天气 周末 医院 学校 银行 市场 技术 服务 系统 网络 产品 客户 用户 手机 电脑"
)
JIEBA_USER_WORDS = tuple(_JIEBA_USER_WORDS.split())
# Frequent words that jieba's own dictionary cuts out, so that the vocabulary holds them.
_COMMON_WORDS = (
    "我们 他们 你们 今天 明天 现在 什么 没有 可以 知道 因为 所以 但是 如果 已经 时候 这个 那个 自己 "
    "问题 工作 公司 中国 一个 一下 大家 非常 觉得 还是 应该 需要 开始 发展 经济 社会 国家 学生 老师 "
    "朋友 时间 地方 东西 事情 孩子 父母 晚上 早上 下午 喜欢 希望 认为 看到 听到 告诉 帮助 结果 情况 "
    "方面 部分 生活 文化 历史 教育 环境 研究 科学 发现 能够 一起 一定 可能 特别 比较 还有 然后 其实 "
    "虽然 而且 或者 只是 这样 那样 怎么 为什么 谢谢 再见 对不起 没关系"
)
COMMON_WORDS = tuple(_COMMON_WORDS.split())
DIGITS = tuple("0123456789")


@dataclass(frozen=True)
class PunctuationArchSpec:
    """Sizes of one generated CT-Transformer; embed_unit = att_unit, as in both published ones."""

    vocab_size: int
    """Words in tokens.json (V), including `<blank>`, `<s>`, `</s>` and `<unk>`."""
    d_model: int
    """embed_unit = att_unit = encoder input and output size (D)."""
    attention_heads: int
    linear_units: int
    """Encoder feed-forward width."""
    num_blocks: int
    """SANM encoder layers."""
    word_level: bool
    """True: jieba words with a user dictionary (the cn-en large model); False: characters."""
    hub_id: str

    def __post_init__(self) -> None:
        if self.d_model % self.attention_heads != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by attention_heads "
                f"({self.attention_heads})"
            )
        if self.vocab_size < 1000:
            raise ValueError(f"vocab_size must be at least 1000, got {self.vocab_size}")


PUNCTUATION_ARCHS: Mapping[str, PunctuationArchSpec] = {
    "ct-punc-zh": PunctuationArchSpec(
        272727, 256, 8, 1024, 4, False, "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch"
    ),
    "ct-punc-large": PunctuationArchSpec(
        471067, 516, 12, 2048, 12, True, "iic/punc_ct-transformer_cn-en-common-vocab471067-large"
    ),
    "ct-punc-zh-tiny": PunctuationArchSpec(
        1200, 64, 8, 128, 2, False, "iic/punc_ct-transformer_zh-cn-common-vocab272727-pytorch"
    ),
    "ct-punc-large-tiny": PunctuationArchSpec(
        3000, 48, 12, 96, 3, True, "iic/punc_ct-transformer_cn-en-common-vocab471067-large"
    ),
}


def punctuation_arch_spec(arch: str) -> PunctuationArchSpec:
    """The spec of a named punctuation architecture; raises ValueError naming the known ones."""
    if arch not in PUNCTUATION_ARCHS:
        raise ValueError(
            f"unknown punctuation arch {arch!r}; known: {', '.join(PUNCTUATION_ARCHS)}"
        )
    return PUNCTUATION_ARCHS[arch]


def punctuation_arch_config(arch: str) -> dict[str, Any]:
    """config.yaml for `arch`: funasr's CTTransformer template with the published sizes."""
    spec = punctuation_arch_spec(arch)
    return {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": spec.d_model,
            "att_unit": spec.d_model,
            "dropout_rate": 0.1,
            "punc_list": list(PUNC_LIST),
            "punc_weight": [1.0] * len(PUNC_LIST),
            "sentence_end_id": SENTENCE_END_ID,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "input_size": spec.d_model,
            "output_size": spec.d_model,
            "attention_heads": spec.attention_heads,
            "linear_units": spec.linear_units,
            "num_blocks": spec.num_blocks,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.0,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": ENCODER_KERNEL,
            "sanm_shfit": 0,  # sic
            "selfattention_layer_type": "sanm",
            "padding_idx": 0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": UNK_TOKEN},
    }


def punctuation_configuration_json(arch: str) -> dict[str, Any]:
    """configuration.json; the word-level model lists its jieba dictionary, as published."""
    spec = punctuation_arch_spec(arch)
    metas: dict[str, Any] = {
        "init_param": "model.pt",
        "config": "config.yaml",
        "tokenizer_conf": {"token_list": "tokens.json"},
    }
    if spec.word_level:
        metas["jieba_usr_dict"] = "jieba_usr_dict"
    return {
        "framework": "pytorch",
        "task": "punctuation",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": spec.hub_id},
        "file_path_metas": metas,
    }


def build_punctuation_vocabulary(arch: str) -> list[str]:
    """tokens.json of `arch`: specials, a fixed shuffle of the words, `<unk>` last.

    Words: English words and letters, digits, CJK characters (common ones first), for the
    word-level models the user-dictionary and common words, then two-character fillers up to V.
    """
    spec = punctuation_arch_spec(arch)
    english = [_english_word(pieces) for pieces in ENGLISH_PIECES]
    words = dict.fromkeys([*english, *LETTERS, *DIGITS])
    if spec.word_level:
        words.update(dict.fromkeys([*JIEBA_USER_WORDS, *COMMON_WORDS]))
    hanzi = dict.fromkeys(HOTWORD_HANZI + COMMON_HANZI + "".join(JIEBA_USER_WORDS + COMMON_WORDS))
    n_body = spec.vocab_size - len(SPECIAL_TOKENS) - 1
    # A word-level vocabulary is mostly words: characters take at most a third of it.
    room = n_body - len(words)
    n_hanzi = min(HANZI_COUNT, room // 3 if spec.word_level else room)
    codepoint = ord(HANZI_FIRST)
    while len(hanzi) < n_hanzi and codepoint <= ord(HANZI_LAST):
        hanzi.setdefault(chr(codepoint))
        codepoint += 1
    words.update(dict.fromkeys(list(hanzi)[:n_hanzi]))
    pool = list(hanzi)[:1000]
    pairs = (a + b for a in pool for b in pool)
    while len(words) < n_body:
        words.setdefault(next(pairs))
    body = list(words)[:n_body]
    random.Random(_TOKEN_SHUFFLE_SEED).shuffle(body)
    return [*SPECIAL_TOKENS, *body, UNK_TOKEN]


def random_punctuation_state_dict(arch: str, seed: int) -> dict[str, torch.Tensor]:
    """Seeded random weights for `arch` under the official key names, with the classifier
    calibrated so that the model emits PUNC_SHARES of each class on random text."""
    from zhuanxie.punctuation import CtTransformer, dims_from_punctuation_config

    config = punctuation_arch_config(arch)
    dims = dims_from_punctuation_config(config, punctuation_arch_spec(arch).vocab_size)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CtTransformer(dims).eval()
        with torch.no_grad():
            model.decoder.weight.mul_(PUNC_LOGIT_SCALE)
            model.decoder.bias.zero_()
            ids = torch.randint(0, dims.vocab_size, (32, 40))
            logits = model(ids, torch.full((32,), 40)).reshape(-1, dims.punctuations)
            model.decoder.bias.copy_(argmax_share_bias(logits, torch.tensor(PUNC_SHARES)))
    finally:
        torch.random.set_rng_state(generator_state)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def argmax_share_bias(logits: torch.Tensor, shares: torch.Tensor) -> torch.Tensor:
    """A bias (P,) under which argmax(logits + bias) picks each class about `shares` of the time;
    a class with share 0 is never picked. logits (M, P)."""
    bias = torch.zeros(logits.shape[1])
    wanted = shares > 0
    bias[~wanted] = -1e4
    for _ in range(300):
        picked = torch.bincount((logits + bias).argmax(-1), minlength=len(shares))
        freq = picked.float() / len(logits)
        bias[wanted] += 0.3 * (shares[wanted].log() - freq[wanted].clamp(min=1e-3).log())
    return bias


def write_random_punctuation_model(
    out_dir: Path,
    arch: str,
    seed: int,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write a complete punctuation model directory for `arch` into `out_dir`; return it.

    `state_dict` (official key names) replaces the calibrated random weights of
    `random_punctuation_state_dict(arch, seed)`. Same arguments give byte-identical files.
    `out_dir` must be absent or empty.
    """
    spec = punctuation_arch_spec(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; refusing to write a model over it")
    if state_dict is None:
        state_dict = random_punctuation_state_dict(arch, seed)
    header = f"# Random-weight {arch} checkpoint written by zhuanxie.generator (seed {seed}).\n"
    config_text = yaml.safe_dump(punctuation_arch_config(arch), sort_keys=False, allow_unicode=True)
    (out_dir / "config.yaml").write_text(header + config_text, encoding="utf-8")
    (out_dir / "configuration.json").write_text(
        json.dumps(punctuation_configuration_json(arch), indent=4, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    (out_dir / "tokens.json").write_text(
        json.dumps(build_punctuation_vocabulary(arch), ensure_ascii=False) + "\n", encoding="utf-8"
    )
    if spec.word_level:
        (out_dir / "jieba_usr_dict").write_text(
            "".join(f"{word}\n" for word in JIEBA_USER_WORDS), encoding="utf-8"
        )
    weights = {key: value.detach().clone().contiguous() for key, value in state_dict.items()}
    torch.save(weights, out_dir / "model.pt")
    return out_dir


# --- FSMN-VAD ------------------------------------------------------------------------------------
# `speech_fsmn_vad_zh-cn-16k-common-pytorch` (`fsmn-vad` in funasr): config.yaml (`model:
# FsmnVADStreaming`, funasr's template, with the WavFrontendOnline front end that funasr 1.4.16
# needs for its aligned waveforms), configuration.json, a 400-dim am.mvn and model.pt.

FSMN_VAD_ARCH = "fsmn-vad"
FSMN_VAD_HUB_ID = "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch"
FSMN_VAD_LFR_M = 5
# The random VAD's silence logit follows the mean log-mel energy of the low mel bins (below about
# 1 kHz, where speech is strong and hiss weak) of a frame's 5 stacked fbank frames: fully silent
# below FSMN_VAD_QUIET (white noise at about -50 dBFS), fully speech above FSMN_VAD_LOUD (quiet
# speech). Measured on the shared corpus: pauses lie at 6-10, speech at 12-19.
FSMN_VAD_LOW_BINS = 30
FSMN_VAD_QUIET, FSMN_VAD_LOUD = 10.5, 12.5
FSMN_VAD_LOGIT = 5.0  # silence logit margin at either extreme: p_sil 0.993 and 0.007
FSMN_VAD_MEMORY = 0.2  # total weight of each layer's 20-frame memory on the energy path


def fsmn_vad_config() -> dict[str, Any]:
    """config.yaml of the published FSMN-VAD, key for key (funasr's template)."""
    return {
        "model": "FsmnVADStreaming",
        "model_conf": {
            "sample_rate": 16000,
            "detect_mode": 1,
            "snr_mode": 0,
            "max_end_silence_time": 800,
            "max_start_silence_time": 3000,
            "do_start_point_detection": True,
            "do_end_point_detection": True,
            "window_size_ms": 200,
            "sil_to_speech_time_thres": 150,
            "speech_to_sil_time_thres": 150,
            "speech_2_noise_ratio": 1.0,
            "do_extend": 1,
            "lookback_time_start_point": 200,
            "lookahead_time_end_point": 100,
            "max_single_segment_time": 60000,
            "snr_thres": -100.0,
            "noise_frame_num_used_for_snr": 100,
            "decibel_thres": -100.0,
            "speech_noise_thres": 0.6,
            "fe_prior_thres": 0.0001,
            "silence_pdf_num": 1,
            "sil_pdf_ids": [0],
            "speech_noise_thresh_low": -0.1,
            "speech_noise_thresh_high": 0.3,
            "output_frame_probs": False,
            "frame_in_ms": 10,
            "frame_length_ms": 25,
        },
        "encoder": "FSMN",
        "encoder_conf": {
            "input_dim": N_MELS * FSMN_VAD_LFR_M,
            "input_affine_dim": 140,
            "fsmn_layers": 4,
            "linear_dim": 250,
            "proj_dim": 128,
            "lorder": 20,
            "rorder": 0,
            "lstride": 1,
            "rstride": 0,
            "output_affine_dim": 140,
            "output_dim": 248,
        },
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": N_MELS,
            "frame_length": 25,
            "frame_shift": 10,
            "dither": 0.0,
            "lfr_m": FSMN_VAD_LFR_M,
            "lfr_n": 1,
        },
    }


def fsmn_vad_configuration_json() -> dict[str, Any]:
    """configuration.json as published for the FSMN-VAD."""
    return {
        "framework": "pytorch",
        "task": "voice-activity-detection",
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": FSMN_VAD_HUB_ID, "hf": "funasr/fsmn-vad"},
        "file_path_metas": {
            "init_param": "model.pt",
            "config": "config.yaml",
            "frontend_conf": {"cmvn_file": "am.mvn"},
        },
    }


def random_fsmn_vad_cmvn(seed: int) -> Cmvn:
    """CMVN for the 400-dim features: the 80-bin statistics of `random_cmvn`, 5 times."""
    cmvn = random_cmvn(seed)
    dim = N_MELS * FSMN_VAD_LFR_M
    return Cmvn(shift=cmvn.shift[:dim].clone(), scale=cmvn.scale[:dim].clone())


@torch.no_grad()
def random_fsmn_vad_state_dict(seed: int, cmvn: Cmvn) -> dict[str, torch.Tensor]:
    """Seeded random FSMN-VAD weights (official key names) that respond to energy.

    Random weights alone make the silence probability wander with no relation to the audio, so
    one path through the network is set by hand, leaving every other weight random: in_linear1
    unit 0 undoes `cmvn` and averages the low-bin log-mels, in_linear2 units 0 and 1 are two
    ReLUs whose difference clamps that energy to [0, 1] between FSMN_VAD_QUIET and FSMN_VAD_LOUD,
    each FSMN layer carries both units through (with a small 20-frame memory, so that the
    streaming caches matter), out_linear1 unit 0 takes their difference and out_linear2 turns it
    into the silence logit, +-FSMN_VAD_LOGIT at the extremes. The other classes get small random
    weights, and the silence row keeps its random weights elsewhere: a little noise on top.
    """
    from zhuanxie.fsmn_vad import FsmnDims, FsmnLayer, FsmnVadModel

    dims = FsmnDims()
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = FsmnVadModel(dims)
    finally:
        torch.random.set_rng_state(generator_state)
    enc = model.encoder
    low = torch.zeros(N_MELS, dtype=torch.bool)
    low[:FSMN_VAD_LOW_BINS] = True
    low = low.repeat(FSMN_VAD_LFR_M)  # (400,)
    count = int(low.sum())
    # cmvn'd feature f = (x + shift) * scale, so x = f / scale - shift.
    in1 = enc.in_linear1.linear
    in1.weight[0] = torch.where(low, 1.0 / (count * cmvn.scale), 0.0)
    in1.bias[0] = -(cmvn.shift * low).sum() / count
    gain = 1.0 / (FSMN_VAD_LOUD - FSMN_VAD_QUIET)
    in2 = enc.in_linear2.linear
    in2.weight[:2] = 0.0
    in2.weight[:2, 0] = gain
    in2.bias[0], in2.bias[1] = -gain * FSMN_VAD_QUIET, -gain * FSMN_VAD_LOUD
    taps = dims.lorder
    for layer in enc.fsmn:
        assert isinstance(layer, FsmnLayer)
        for module in (layer.linear.linear, layer.affine.linear):
            module.weight[:2] = 0.0
            module.weight[0, 0] = module.weight[1, 1] = 1.0
        layer.affine.linear.bias[:2] = 0.0
        layer.fsmn_block.conv_left.weight[:2] = FSMN_VAD_MEMORY / taps
    out1 = enc.out_linear1.linear
    out1.weight[0] = 0.0
    out1.weight[0, 0], out1.weight[0, 1] = 1.0, -1.0
    out1.bias[0] = 0.0
    out2 = enc.out_linear2.linear
    # log-sum-exp of the other classes' logits, which are all about 0
    others = torch.tensor(dims.output_dim - 1.0).log()
    steady_gain = (1.0 + FSMN_VAD_MEMORY) ** dims.fsmn_layers  # of the energy path at [0, 1]
    out2.weight[1:] *= 0.1
    out2.bias[1:] = 0.0
    out2.weight[0, 0] = -2.0 * FSMN_VAD_LOGIT / steady_gain
    out2.bias[0] = others + FSMN_VAD_LOGIT
    return {key: value.detach().clone().contiguous() for key, value in model.state_dict().items()}


def write_random_fsmn_vad(out_dir: Path, seed: int = 0) -> Path:
    """Write a complete FSMN-VAD directory (`fsmn-vad`, ~0.43M parameters) into `out_dir`.

    Same arguments give byte-identical files. `out_dir` must be absent or empty.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; refusing to write a model over it")
    header = (
        f"# Random-weight {FSMN_VAD_ARCH} checkpoint written by zhuanxie.generator (seed {seed}).\n"
    )
    config_text = yaml.safe_dump(fsmn_vad_config(), sort_keys=False, allow_unicode=True)
    (out_dir / "config.yaml").write_text(header + config_text, encoding="utf-8")
    (out_dir / "configuration.json").write_text(
        json.dumps(fsmn_vad_configuration_json(), indent=4, ensure_ascii=False) + "\n",
        encoding="utf-8",
    )
    cmvn = random_fsmn_vad_cmvn(seed)
    write_cmvn(out_dir / "am.mvn", cmvn)
    torch.save(random_fsmn_vad_state_dict(seed, cmvn), out_dir / "model.pt")
    return out_dir
