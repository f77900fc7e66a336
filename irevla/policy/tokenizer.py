"""Instruction text -> fixed-length token ids.

Every instruction becomes exactly ``max_tokens`` ids (padded or truncated), so a backbone's latent always has the
same number of tokens: the RL replay buffer stores latents of one shape, and the head's attention mask marks the
padding.

* `ByteTokenizer` -- for backbones built from config with random weights (nothing to download, nothing to save):
  ids are UTF-8 bytes shifted past three special ids (pad 0, bos 1, eos 2).
* `HFTextTokenizer` -- wraps the tokenizer saved next to a pretrained model (``AutoTokenizer.from_pretrained`` on a
  local directory).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TokenizedText:
    """ids: int64 (B, L); mask: bool (B, L), True on real tokens (right-padded)."""

    ids: torch.Tensor
    mask: torch.Tensor


class TextTokenizer(Protocol):
    max_tokens: int
    pad_id: int

    def __call__(self, texts: Sequence[str]) -> TokenizedText: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens: ``[bos] bytes... [eos] [pad]...``; vocabulary 259 + any extra special ids."""

    PAD, BOS, EOS = 0, 1, 2
    OFFSET = 3
    VOCAB_SIZE = 256 + OFFSET

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 3:
            raise ValueError(f"ByteTokenizer.max_tokens: expected >= 3 (bos + eos + text), got {max_tokens}")
        self.max_tokens = int(max_tokens)
        self.pad_id = self.PAD
        self._warned = False

    def __call__(self, texts: Sequence[str]) -> TokenizedText:
        ids = torch.full((len(texts), self.max_tokens), self.PAD, dtype=torch.long)
        mask = torch.zeros((len(texts), self.max_tokens), dtype=torch.bool)
        for row, text in enumerate(texts):
            encoded = list(text.encode("utf-8"))
            room = self.max_tokens - 2
            if len(encoded) > room and not self._warned:
                log.warning("instruction %r is longer than %d bytes: truncated (raise backbone.max_text_tokens)",
                            text, room)
                self._warned = True
            tokens = [self.BOS, *(b + self.OFFSET for b in encoded[:room]), self.EOS]
            ids[row, :len(tokens)] = torch.tensor(tokens)
            mask[row, :len(tokens)] = True
        return TokenizedText(ids, mask)


class HFTextTokenizer:
    """A transformers tokenizer, right-padded/truncated to ``max_tokens``. ``add_special_tokens=False`` for families
    whose prompt already carries them (PaliGemma writes its own ``<bos>``, as its processor does)."""

    def __init__(self, tokenizer, max_tokens: int, add_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.max_tokens = int(max_tokens)
        self.add_special_tokens = add_special_tokens
        if tokenizer.pad_token_id is None:
            # Decoder-only LMs often ship without a pad token; padding is masked out, any id will do.
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
        tokenizer.padding_side = "right"
        self.pad_id = int(tokenizer.pad_token_id)

    def __call__(self, texts: Sequence[str]) -> TokenizedText:
        encoded = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.max_tokens,
                                 return_tensors="pt", add_special_tokens=self.add_special_tokens)
        return TokenizedText(encoded["input_ids"].long(), encoded["attention_mask"].bool())
