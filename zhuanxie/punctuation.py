"""CT-Transformer punctuation restoration (Chen et al., 2020, arXiv:2003.01309), batched.

    words ─► embedding ─► SANM encoder ─► linear ─► one punctuation class per word
                          (the ASR encoder, positions from embeddings)

Both published models load from their official directories:
`punc_ct-transformer_zh-cn-common-vocab272727-pytorch` (one CJK character per word) and
`punc_ct-transformer_cn-en-common-vocab471067-large` (Chinese words cut by jieba with the model's
user dictionary). Results equal funasr 1.4.16's `CTTransformer.inference` text for text, including
its windowing: a text is read in mini-sentences of 20 words, and everything after the last sentence
end of a window is carried into the next one. That carry makes one text's windows sequential, but
texts are independent, so `Punctuator` runs window k of every text in one forward pass: N texts
cost about as many passes as the longest text has windows, not the sum of all windows.

Shape legend: B batch, N words, E embedding width, D model dim, P punctuation classes, V vocab.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from zhuanxie.batching import BatchBudget, plan_batches
from zhuanxie.checkpoint import CheckpointError, read_config, read_json, read_state_dict, section
from zhuanxie.model import Encoder, EncoderDims

# The reference's window size (`split_size`) and the carried length beyond which a window with no
# sentence end is cut at its last comma instead (`cache_pop_trigger_limit`).
WINDOW_WORDS = 20
FORCED_CUT_LENGTH = 200

# Class names the reference compares against; a punc_list spelling them otherwise (its template
# writes ASCII ',' and '?') disables the matching rule there, and so here.
NO_PUNCTUATION = "_"
COMMA = "，"
SENTENCE_ENDS = ("。", "？")
# Punctuation after a word that starts with an ASCII character is written in ASCII.
ASCII_FORMS = {"，": ",", "。": ".", "？": "?"}
# The reference re-expands a jieba word to one entry per character when its first character lies
# in this range (sic: it starts at U+0E00, Thai, not at U+4E00).
EXPANDED_FIRST, EXPANDED_LAST = "\u0e00", "\u9fa5"
ENGLISH_WORD = re.compile(r"^[a-zA-Z']+$")


@dataclass(frozen=True)
class CtTransformerDims:
    vocab_size: int  # V
    embed_unit: int  # E, the encoder's input size
    encoder: EncoderDims
    punctuations: int  # P, the classes of punc_list


class CtTransformer(nn.Module):
    """Embedding, SANM encoder (scaled by sqrt(D), plus sinusoidal positions), linear classifier.

    Module names mirror the official keys: `embed.weight`, `encoder.encoders0.0.*`,
    `encoder.encoders.{i}.*`, `encoder.after_norm.*`, `decoder.{weight,bias}`.
    """

    def __init__(self, dims: CtTransformerDims) -> None:
        super().__init__()
        self.dims = dims
        self.embed = nn.Embedding(dims.vocab_size, dims.embed_unit)
        self.encoder = Encoder(dims.encoder)
        self.decoder = nn.Linear(dims.encoder.d_model, dims.punctuations)

    def forward(self, ids: Tensor, lens: Tensor) -> Tensor:
        """ids (B, N) int64, lens (B,) -> logits (B, N, P); padded positions hold garbage.

        Padding never reaches a valid position: attention masks padded keys and the FSMN memory
        zeroes padded values, so each row equals that row run alone (batch 1, as the reference).
        """
        return self.decoder(self.encoder(self.embed(ids), lens))


class Segmenter(Protocol):
    """What we use of a jieba `Tokenizer`."""

    def cut(self, sentence: str, cut_all: bool = ..., HMM: bool = ...) -> Any: ...  # noqa: N803


@dataclass(frozen=True)
class PunctuationFiles:
    """Where the parts of an official CT-Transformer directory are."""

    directory: Path
    config: Path
    weights: Path
    tokens: Path
    jieba_dict: Path | None  # only the Chinese-English word-level model has one


@dataclass(frozen=True)
class PunctuationModel:
    """A loaded punctuation directory: the network and what turns text into its input."""

    network: CtTransformer
    dims: CtTransformerDims
    vocabulary: Mapping[str, int] = field(repr=False)
    unk_id: int
    punc_list: tuple[str, ...]
    sentence_end_id: int  # class the forced cut writes (the reference's `sentence_end_id`)
    segmenter: Segmenter | None  # jieba with the model's user dictionary; None: char level
    directory: Path
    device: torch.device


def locate_punctuation_files(directory: str | Path) -> PunctuationFiles:
    """Find the files of a directory the way funasr does (`download_from_ms`).

    With `configuration.json`, its `file_path_metas` name the files, and a jieba dictionary is
    used only if listed there; without it, fixed names are used and `jieba_usr_dict` is picked
    up when present.
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"model directory {root} does not exist or is not a directory")
    config, weights, token_names = "config.yaml", "model.pt", ["tokens.json", "tokens.txt"]
    jieba_name: str | None = "jieba_usr_dict"
    meta_path = root / "configuration.json"
    if meta_path.exists():
        metas = read_json(meta_path).get("file_path_metas", {})
        if not isinstance(metas, dict):
            raise CheckpointError(f"{meta_path}: 'file_path_metas' must be an object")
        config = str(metas.get("config", config))
        weights = str(metas.get("init_param", weights))
        tokenizer = metas.get("tokenizer_conf")
        if isinstance(tokenizer, dict) and isinstance(tokenizer.get("token_list"), str):
            token_names = [tokenizer["token_list"]]
        listed = metas.get("jieba_usr_dict")
        jieba_name = listed if isinstance(listed, str) else None
    tokens = next((root / n for n in token_names if (root / n).is_file()), None)
    if tokens is None:
        raise CheckpointError(f"{root}: no token list found (looked for {', '.join(token_names)})")
    jieba_dict = root / jieba_name if jieba_name else None
    return PunctuationFiles(
        directory=root,
        config=_require(root / config, "the model configuration"),
        weights=_require(root / weights, "the model weights"),
        tokens=tokens,
        jieba_dict=jieba_dict if jieba_dict is not None and jieba_dict.is_file() else None,
    )


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: the model directory needs {what}")
    return path


def read_vocabulary(path: Path) -> tuple[str, ...]:
    """tokens.json (a JSON list of strings) or tokens.txt (one per line, right-stripped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not readable UTF-8 text: {e}") from e
    if path.suffix == ".txt":
        return tuple(line.rstrip() for line in text.splitlines())
    try:
        tokens = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise CheckpointError(f"{path} must hold a JSON list of strings")
    return tuple(tokens)


def dims_from_punctuation_config(
    config: Mapping[str, Any], vocab_size: int, source: str = "config"
) -> CtTransformerDims:
    """The architecture from a CT-Transformer `config.yaml` (defaults as in funasr)."""
    if config.get("model") != "CTTransformer":
        raise CheckpointError(
            f"{source}: model '{config.get('model')}' is not a punctuation model "
            "(expected CTTransformer)"
        )
    if config.get("encoder") != "SANMEncoder":
        raise CheckpointError(f"{source}: encoder '{config.get('encoder')}' is not SANMEncoder")
    model_conf = section(config, "model_conf", source)
    enc = section(config, "encoder_conf", source)
    for key, want in (("input_layer", "pe"), ("selfattention_layer_type", "sanm")):
        # SANMEncoder's own defaults are conv2d and sanm.
        if enc.get(key, "conv2d" if key == "input_layer" else "sanm") != want:
            raise CheckpointError(f"{source}: encoder_conf.{key} must be '{want}'")
    if not enc.get("normalize_before", True):
        raise CheckpointError(f"{source}: encoder_conf.normalize_before must be true")
    embed_unit = int(model_conf.get("embed_unit", 128))
    att_unit = int(model_conf.get("att_unit", 256))
    input_size = int(enc.get("input_size", embed_unit))
    d_model = int(enc.get("output_size", 256))
    if input_size != embed_unit or d_model != att_unit:
        raise CheckpointError(
            f"{source}: encoder_conf input_size/output_size ({input_size}/{d_model}) must equal "
            f"model_conf embed_unit/att_unit ({embed_unit}/{att_unit})"
        )
    encoder = EncoderDims(
        input_size=input_size,
        d_model=d_model,
        heads=int(enc.get("attention_heads", 4)),
        linear_units=int(enc.get("linear_units", 2048)),
        num_blocks=int(enc.get("num_blocks", 6)),
        kernel_size=int(enc.get("kernel_size", 11)),
        sanm_shift=int(enc.get("sanm_shfit", 0)),  # sic: the reference's spelling
    )
    punctuations = len(punc_list_from_config(config, source))
    return CtTransformerDims(vocab_size, embed_unit, encoder, punctuations)


def punc_list_from_config(config: Mapping[str, Any], source: str) -> tuple[str, ...]:
    punc_list = section(config, "model_conf", source).get("punc_list")
    if not isinstance(punc_list, list) or not all(isinstance(p, str) for p in punc_list):
        raise CheckpointError(f"{source}: model_conf.punc_list must be a list of strings")
    if NO_PUNCTUATION not in punc_list:
        raise CheckpointError(f"{source}: model_conf.punc_list lacks the no-punctuation class '_'")
    return tuple(punc_list)


def load_punctuation_weights(
    model: CtTransformer, state: Mapping[str, Tensor], source: str
) -> None:
    """Fill every parameter from an official state dict, or fail listing every mismatch."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    mis_shaped = [
        f"{k}: checkpoint {tuple(v.shape)}, model {tuple(ours[k].shape)}"
        for k, v in state.items()
        if k in ours and v.shape != ours[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing[:20])}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected[:20])}")
    if mis_shaped:
        problems.append(f"shape mismatches ({len(mis_shaped)}): {'; '.join(mis_shaped[:20])}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the model in config.yaml: " + " | ".join(problems)
        )
    model.load_state_dict(state, strict=True)


def load_punctuation_model(path: str | Path, device: str = "cpu") -> PunctuationModel:
    """Load an official CT-Transformer directory (`model.pt`, `config.yaml`, tokens, jieba dict)."""
    files = locate_punctuation_files(path)
    config = read_config(files.config)
    source = str(files.config)
    tokens = read_vocabulary(files.tokens)
    vocabulary: dict[str, int] = {}
    for i, token in enumerate(tokens):
        if vocabulary.setdefault(token, i) != i:
            raise CheckpointError(f"{files.tokens}: token {token!r} appears twice")
    unk = str(section(config, "tokenizer_conf", source).get("unk_symbol", "<unk>"))
    if unk not in vocabulary:
        raise CheckpointError(f"{files.tokens}: the unknown-word token {unk!r} is missing")
    dims = dims_from_punctuation_config(config, len(tokens), source)
    punc_list = punc_list_from_config(config, source)
    sentence_end_id = int(section(config, "model_conf", source).get("sentence_end_id", 3))
    if not 0 <= sentence_end_id < len(punc_list):
        raise CheckpointError(f"{source}: sentence_end_id {sentence_end_id} is not in punc_list")
    network = CtTransformer(dims)
    load_punctuation_weights(network, read_state_dict(files.weights), str(files.weights))
    torch_device = torch.device(device)
    network.eval().to(torch_device)
    segmenter = jieba_segmenter(files.jieba_dict) if files.jieba_dict else None
    return PunctuationModel(
        network=network,
        dims=dims,
        vocabulary=vocabulary,
        unk_id=vocabulary[unk],
        punc_list=punc_list,
        sentence_end_id=sentence_end_id,
        segmenter=segmenter,
        directory=files.directory,
        device=torch_device,
    )


def jieba_segmenter(user_dict: Path) -> Segmenter:
    """A private jieba tokenizer with `user_dict` loaded.

    The reference loads the dictionary into jieba's global tokenizer; a private one gives the
    same cuts without changing them for anyone else in the process.
    """
    try:
        import jieba
    except ImportError as e:
        raise CheckpointError(
            f"{user_dict.parent} is a word-level punctuation model and needs jieba: "
            "pip install jieba"
        ) from e
    segmenter = jieba.Tokenizer()
    try:
        segmenter.load_userdict(str(user_dict))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{user_dict} is not a readable jieba dictionary: {e}") from e
    return segmenter


def split_words(text: str, segmenter: Segmenter | None) -> list[str]:
    """The reference's `split_words`: the words the model reads.

    Without a segmenter each CJK character is a word and each run of ASCII characters is one.
    With one, whitespace-separated English words stay whole and each run of other tokens is
    joined without spaces and cut by jieba (HMM off).
    """
    if segmenter is None:
        return [w for part in text.split() for w in _ascii_runs_and_chars(part)]
    words: list[str] = []
    run: list[str] = []
    for token in text.split():
        if ENGLISH_WORD.search(token):
            if run:
                words.extend(segmenter.cut("".join(run), HMM=False))
                run = []
            words.append(token)
        else:
            run.append(token)
    if run:
        words.extend(segmenter.cut("".join(run), HMM=False))
    return words


def _ascii_runs_and_chars(part: str) -> list[str]:
    words: list[str] = []
    ascii_run = ""
    for char in part:
        if char < "\x80":
            ascii_run += char
            continue
        if ascii_run:
            words.append(ascii_run)
            ascii_run = ""
        words.append(char)
    if ascii_run:
        words.append(ascii_run)
    return words


@dataclass(frozen=True)
class PunctuatedText:
    """A text with punctuation restored, as funasr's CT-Transformer returns it."""

    text: str
    """Punctuated text: capitalised after sentence ends, ends in `。` or `.` (or `？`/`?`)."""
    units: tuple[str, ...]
    """The units `punc_ids` refer to: the model's words, with a jieba word starting with a CJK
    character split into its characters."""
    punc_ids: tuple[int, ...]
    """punc_list index after each unit (the reference's `punc_array`); 1 is none."""


@dataclass
class _Reading:
    """One text's progress through its windows (mutable working state of `punctuate`)."""

    words: list[str]
    ids: list[int]
    window_ends: list[int]  # end of each 20-word mini-sentence, in words
    window: int = 0  # the next window to run
    carry: int = 0  # first word not yet emitted: the carried tail starts here
    puncs: list[int] = field(default_factory=list)  # classes of the emitted words
    pieces: list[tuple[int, int]] = field(default_factory=list)  # emitted (start, end) spans

    @property
    def done(self) -> bool:
        return self.window == len(self.window_ends)

    @property
    def span(self) -> tuple[int, int]:
        """The words the next forward pass reads: the carried tail plus the next window."""
        return self.carry, self.window_ends[self.window]


class Punctuator:
    """Restores punctuation to many texts at once with one CT-Transformer model.

    Each round runs the next window of every unfinished text, in forward passes planned by
    `plan_batches`: windows of similar length together (a carried tail can make one window ten
    times longer than the rest), at most `max_batch_words` padded words and `max_batch_texts`
    windows per pass.
    """

    def __init__(
        self, model: PunctuationModel, *, max_batch_words: int = 1024, max_batch_texts: int = 256
    ) -> None:
        self.model = model
        self.budget = BatchBudget(max_padded_frames=max_batch_words, max_batch_size=max_batch_texts)

    def punctuate(self, texts: Sequence[str]) -> list[PunctuatedText]:
        """Punctuate `texts`; each result equals that text punctuated alone by the reference."""
        readings = [self._start(text) for text in texts]
        active = [r for r in readings if r is not None]
        while active:
            lengths = [end - start for start, end in (r.span for r in active)]
            for batch in plan_batches(lengths, self.budget):
                self._step([active[i] for i in batch])
            active = [r for r in active if not r.done]
        return [self._finish(r) if r is not None else PunctuatedText("", (), ()) for r in readings]

    def _start(self, text: str) -> _Reading | None:
        words = split_words(text, self.model.segmenter)
        if not words:
            return None
        vocabulary, unk = self.model.vocabulary, self.model.unk_id
        ends = [*range(WINDOW_WORDS, len(words), WINDOW_WORDS), len(words)]
        return _Reading(words, [vocabulary.get(w, unk) for w in words], ends)

    @torch.inference_mode()
    def _step(self, batch: Sequence[_Reading]) -> None:
        """Run the next window of every reading in `batch` and advance each."""
        spans = [r.span for r in batch]
        lens = torch.tensor([end - start for start, end in spans])
        ids = torch.zeros(len(batch), int(lens.max()), dtype=torch.long)
        for row, (reading, (start, end)) in enumerate(zip(batch, spans)):
            ids[row, : end - start] = torch.tensor(reading.ids[start:end])
        device = self.model.device
        logits = self.model.network(ids.to(device), lens.to(device))
        classes = logits.argmax(-1).tolist()
        for reading, row, n in zip(batch, classes, lens.tolist()):
            self._advance(reading, row[:n])

    def _advance(self, reading: _Reading, classes: list[int]) -> None:
        """Emit the window up to its last sentence end and carry the rest (the reference's
        `inference` loop body); the last window is emitted whole."""
        reading.window += 1
        cut = len(classes) - 1
        if not reading.done:
            cut = self._sentence_end(classes)
        reading.puncs += classes[: cut + 1]
        reading.pieces.append((reading.carry, reading.carry + cut + 1))
        reading.carry += cut + 1

    def _sentence_end(self, classes: list[int]) -> int:
        """Index of the last `。`/`？` in classes[2:-1], or -1; past FORCED_CUT_LENGTH words, the
        last comma after any sentence end, turned into a sentence end."""
        names = self.model.punc_list
        comma = -1
        for i in range(len(classes) - 2, 1, -1):
            if names[classes[i]] in SENTENCE_ENDS:
                return i
            if comma < 0 and names[classes[i]] == COMMA:
                comma = i
        if len(classes) > FORCED_CUT_LENGTH and comma >= 0:
            classes[comma] = self.model.sentence_end_id
            return comma
        return -1

    def _finish(self, reading: _Reading) -> PunctuatedText:
        names = self.model.punc_list
        text = "".join(
            render(reading.words[start:end], reading.puncs[start:end], names)
            for start, end in reading.pieces
        )
        text, final = close_text(text)
        puncs = list(reading.puncs)
        if final:
            puncs[-1] = self.model.sentence_end_id
        if self.model.segmenter is None:
            return PunctuatedText(text, tuple(reading.words), tuple(puncs))
        units: list[str] = []
        unit_puncs: list[int] = []
        for word, punc in zip(reading.words, puncs):
            if EXPANDED_FIRST <= word[0] <= EXPANDED_LAST and len(word) > 1:
                units += word
                unit_puncs += [1] * (len(word) - 1)
            else:
                units.append(word)
            unit_puncs.append(punc)
        return PunctuatedText(text, tuple(units), tuple(unit_puncs))


def render(words: Sequence[str], classes: Sequence[int], punc_list: Sequence[str]) -> str:
    """One emitted piece as text, by the reference's rules (applied per piece, as it does).

    An ASCII-initial word is capitalised (`str.capitalize`, which lowercases the rest) at the
    piece start or after a sentence end, and preceded by a space at the piece start or after
    another ASCII-initial word; punctuation after it is written in ASCII.
    """
    out: list[str] = []
    for i, word in enumerate(words):
        ascii_word = word[0] < "\x80"
        if ascii_word and (i == 0 or punc_list[classes[i - 1]] in SENTENCE_ENDS):
            word = word.capitalize()
        if ascii_word and (i == 0 or words[i - 1][0] < "\x80"):
            word = " " + word
        out.append(word)
        name = punc_list[classes[i]]
        if name != NO_PUNCTUATION:
            out.append(ASCII_FORMS.get(name, name) if ascii_word else name)
    return "".join(out)


def close_text(text: str) -> tuple[str, bool]:
    """Force a final sentence end as the reference does; also says whether the last word's class
    becomes the sentence end (True unless the text already ends in `。？.?`)."""
    last = text[-1]
    if last in ("，", "、"):
        return text[:-1] + "。", True
    if last == ",":
        return text[:-1] + ".", True
    if last in ("。", "？", ".", "?"):
        return text, False
    return text + ("." if last < "\x80" else "。"), True
