"""SeACo hotwords: tokenise, encode once, cache, batch per item, report matches.

A hotword list is per input. A batch whose items ask for different lists encodes the union once
(each phrase's bias-encoder output is cached) and masks per item, so mixing requests costs one
bias-decoder pass, not one per list.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from zhuanxie.decoding import HotwordBatch
from zhuanxie.model import Paraformer
from zhuanxie.tokenizer import TokenList, tokenize_hotword

# Past these sizes SeACo quality is known to degrade (FunASR issues #1231, #2547; the runtime
# recommends at most ~1k hotwords of at most 10 characters).
MANY_HOTWORDS = 200
LONG_HOTWORD = 10


class HotwordWarning(UserWarning):
    """A hotword that will not work as the user expects."""


def normalize_hotwords(phrases: Sequence[str]) -> tuple[str, ...]:
    """Strip, drop empties and duplicates (keeping first occurrences), warn on risky lists."""
    if isinstance(phrases, str):
        raise TypeError("hotwords must be a sequence of phrases, not one string")
    seen: dict[str, None] = {}
    for phrase in phrases:
        text = " ".join(str(phrase).split())
        if text:
            seen.setdefault(text, None)
    result = tuple(seen)
    if len(result) > MANY_HOTWORDS:
        warnings.warn(
            f"{len(result)} hotwords given; SeACo recall drops beyond about {MANY_HOTWORDS}",
            HotwordWarning,
            stacklevel=3,
        )
    return result


class HotwordEncoder:
    """Turns per-item hotword lists into a ``HotwordBatch``; thread-safe, bounded cache."""

    def __init__(
        self,
        model: Paraformer,
        tokens: TokenList,
        seg_dict: Mapping[str, Sequence[str]] | None,
        capacity: int = 4096,
    ) -> None:
        self.model = model
        self.tokens = tokens
        self.seg_dict = seg_dict
        self.capacity = capacity
        self._cache: OrderedDict[str, Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def batch(self, per_item: Sequence[tuple[str, ...]]) -> HotwordBatch | None:
        """One list of phrases per item -> encoded union with a per-item mask, or None if no item
        has hotwords."""
        if not any(per_item):
            return None
        union = list(dict.fromkeys(p for phrases in per_item for p in phrases))
        index = {p: i + 1 for i, p in enumerate(union)}  # entry 0 is the no-bias entry
        embeddings = self.encode(union)
        device = embeddings.device
        member = torch.zeros(len(per_item), len(union) + 1, dtype=torch.bool)
        member[:, 0] = True
        for row, phrases in enumerate(per_item):
            member[row, [index[p] for p in phrases]] = True
        active = torch.tensor([bool(p) for p in per_item])
        return HotwordBatch(embeddings, member.to(device), active.to(device))

    def encode(self, phrases: Sequence[str]) -> Tensor:
        """-> (K + 1, D): the no-bias entry, then one embedding per phrase."""
        with self._lock:
            missing = [p for p in phrases if p not in self._cache]
            if missing:
                self._store(missing)
            for p in phrases:
                self._cache.move_to_end(p)
            no_bias = self._cache[NO_BIAS_KEY]
            rows = [no_bias, *(self._cache[p] for p in phrases)]
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
        return torch.stack(rows)

    def _store(self, phrases: list[str]) -> None:
        ids: list[tuple[int, ...]] = []
        for phrase in phrases:
            hw = tokenize_hotword(phrase, self.tokens, self.seg_dict)
            if hw.unknown:
                warnings.warn(
                    f"hotword {phrase!r} cannot be represented by this model's vocabulary "
                    f"({', '.join(hw.unknown)} became <unk>); it will not bias recognition",
                    HotwordWarning,
                    stacklevel=5,
                )
            elif len(phrase) > LONG_HOTWORD and not phrase.isascii():
                warnings.warn(
                    f"hotword {phrase!r} is longer than {LONG_HOTWORD} characters; "
                    "SeACo works best on short names and terms",
                    HotwordWarning,
                    stacklevel=5,
                )
            ids.append(hw.ids)
        keys = list(phrases)
        if NO_BIAS_KEY not in self._cache:
            keys.append(NO_BIAS_KEY)
            ids.append((self.tokens.sos_id,))
        device = next(self.model.parameters()).device
        lens = torch.tensor([len(i) for i in ids])
        padded = torch.zeros(len(ids), int(lens.max()), dtype=torch.long)
        for row, seq in enumerate(ids):
            padded[row, : len(seq)] = torch.tensor(seq)
        with torch.inference_mode():
            encoded = self.model.encode_hotwords(padded.to(device), lens.to(device))
        for key, row_embedding in zip(keys, encoded):
            self._cache[key] = row_embedding


# The reference appends the <s> token as a last hotword that means "no bias"; a key no phrase
# can take (phrases are whitespace-normalised, so never start with a space).
NO_BIAS_KEY = " <no-bias>"


def hotwords_found(text: str, phrases: Sequence[str]) -> tuple[str, ...]:
    """The phrases that occur in ``text`` (case-insensitive; spaces inside phrases optional)."""
    haystack = text.lower().replace(" ", "")
    return tuple(p for p in phrases if p.lower().replace(" ", "") in haystack)
