"""Token list, seg_dict and hotword tokenisation for Paraformer vocabularies.

A Paraformer vocabulary (`tokens.json`) is a list of strings: Chinese characters, English BPE
pieces marked with a trailing `@@` when a word continues, and the specials `<blank>`, `<s>`,
`</s>` and `<unk>`. `seg_dict` maps words to those pieces (`main ma@@ in`); SeACo uses it to turn
hotwords into token ids.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BLANK = "<blank>"
SOS = "<s>"
EOS = "</s>"
UNK = "<unk>"

# funasr's `generate_hotwords_list` (seaco_paraformer/model.py) splits a word it cannot find in
# seg_dict into characters only when the whole word is CJK (U+4E00..U+9FA5, not ..U+9FFF) or ASCII
# digits; anything else becomes a single <unk>.
_CHAR_SPLITTABLE = re.compile(r"[\u4e00-\u9fa50-9]+")


@dataclass(frozen=True)
class TokenList:
    """An id <-> token mapping with the four specials Paraformer needs.

    Unknown tokens map to `<unk>`, as in funasr's `BaseTokenizer.tokens2ids`.
    """

    tokens: tuple[str, ...]
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.tokens:
            raise ValueError("token list is empty")
        ids: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            if not isinstance(token, str):
                raise ValueError(f"token {i} is {type(token).__name__}, not a string: {token!r}")
            if token in ids:
                raise ValueError(f"token {token!r} appears twice, at ids {ids[token]} and {i}")
            ids[token] = i
        missing = [name for name in (BLANK, SOS, EOS, UNK) if name not in ids]
        if missing:
            raise ValueError(f"token list lacks the special tokens {', '.join(missing)}")
        object.__setattr__(self, "_ids", ids)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def blank_id(self) -> int:
        return self._ids[BLANK]

    @property
    def sos_id(self) -> int:
        return self._ids[SOS]

    @property
    def eos_id(self) -> int:
        return self._ids[EOS]

    @property
    def unk_id(self) -> int:
        return self._ids[UNK]

    def to_ids(self, tokens: Iterable[str]) -> list[int]:
        """Ids of `tokens`; tokens not in the list become the `<unk>` id."""
        unk = self.unk_id
        return [self._ids.get(token, unk) for token in tokens]

    def to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Tokens of `ids`; raises IndexError for an id outside the list."""
        size = len(self.tokens)
        out = []
        for i in ids:
            if not 0 <= i < size:
                raise IndexError(f"token id {i} is outside the token list (size {size})")
            out.append(self.tokens[i])
        return out

    def content_tokens(self, ids: Iterable[int]) -> list[str]:
        """Tokens of decoder output ids without `<blank>`, `<s>` and `</s>`, as funasr filters them.

        `<unk>` is kept: the text layer drops it, but it still owns a CIF timestamp slot.
        """
        dropped = {self.blank_id, self.sos_id, self.eos_id}
        return self.to_tokens(i for i in ids if i not in dropped)


def load_token_list(path: str | Path) -> TokenList:
    """Load `tokens.json` (a JSON list of strings) or `tokens.txt` (one token per line)."""
    path = Path(path)
    if path.suffix not in (".json", ".txt"):
        raise ValueError(f"{path}: expected a tokens.json or tokens.txt file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"token list not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    if path.suffix == ".json":
        try:
            tokens = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(tokens, list):
            raise ValueError(
                f"{path}: expected a JSON list of strings, got {type(tokens).__name__}"
            )
    else:
        # funasr's BaseTokenizer strips trailing whitespace from each line.
        tokens = [line.rstrip() for line in _lines(text)]
    try:
        return TokenList(tuple(tokens))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def load_seg_dict(path: str | Path) -> dict[str, list[str]]:
    """Load a `seg_dict`: each line is a word followed by its token pieces (`main ma@@ in`).

    Fields are split on any whitespace and a repeated word keeps its last entry, as in funasr's
    `load_seg_dict`. Blank lines are skipped (funasr raises IndexError on them).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"seg_dict not found: {path}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None
    seg_dict: dict[str, list[str]] = {}
    for line in _lines(text):
        fields = line.split()
        if fields:
            seg_dict[fields[0]] = fields[1:]
    return seg_dict


def _lines(text: str) -> list[str]:
    """Lines as iterating a text file yields them: split at newlines only. (str.splitlines also
    splits at U+001C, U+2028 and others, which funasr's str.split() treats as field separators.)"""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


@dataclass(frozen=True)
class HotwordTokens:
    """A hotword phrase as token ids.

    `unknown` lists, in order, the parts that became `<unk>`: a lowercased word that seg_dict lacks
    and that is not purely CJK/digits (`gpu驱动`), a character that seg_dict lacks, or a piece
    missing from the token list. A non-empty `unknown` means the bias cannot match that part.
    """

    ids: tuple[int, ...]
    unknown: tuple[str, ...]


def tokenize_hotword(
    phrase: str, tokens: TokenList, seg_dict: Mapping[str, Sequence[str]] | None
) -> HotwordTokens:
    """Token ids for one hotword phrase, exactly as funasr's SeACo `generate_hotwords_list`.

    The phrase is split on whitespace and each word is lowercased; a word in `seg_dict` becomes its
    pieces; a word of CJK characters and digits becomes the seg_dict pieces of each character (a
    character seg_dict lacks becomes `<unk>`); any other word becomes one `<unk>`. Without a
    seg_dict (a model directory without one), funasr looks each word up in the token list as is,
    without lowercasing. A phrase with spaces matches one line of funasr's hotword `.txt` file.
    """
    words = phrase.split()
    # (piece, the part of the phrase it stands for)
    pieces: list[tuple[str, str]] = []
    if seg_dict is None:
        pieces = [(word, word) for word in words]
    else:
        for word in map(str.lower, words):
            if word in seg_dict:
                pieces += [(piece, word) for piece in seg_dict[word]]
            elif _CHAR_SPLITTABLE.fullmatch(word):
                for char in word:
                    char_pieces = seg_dict.get(char, [UNK])
                    pieces += [(piece, char) for piece in char_pieces]
            else:
                pieces.append((UNK, word))
    if not pieces:
        raise ValueError(f"hotword {phrase!r} yields no tokens")
    ids = tokens.to_ids(piece for piece, _ in pieces)
    unknown = tuple(part for (_, part), i in zip(pieces, ids) if i == tokens.unk_id)
    return HotwordTokens(ids=tuple(ids), unknown=unknown)
