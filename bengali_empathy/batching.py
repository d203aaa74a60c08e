"""Batching: the padding collator and token-budget micro-batches.

Every batch is an ordinary right-padded batch with an attention mask, so each example's loss is the
same as if it were alone (tests/test_batching.py checks this on the real model). What changes with
`batching=token_budget` is only which examples share a micro-batch: similar lengths, as many as fit a
token budget. That removes most padding and the per-micro-batch overhead of tiny batches.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch


class PaddingCollator:
    """Pads input_ids with the pad id, labels with -100; pad_to fixes the padded length (the seed's 512)."""

    def __init__(self, pad_token_id: int, pad_to: int | None = None, pad_multiple: int = 8):
        self.pad_token_id = pad_token_id
        self.pad_to = pad_to
        self.pad_multiple = pad_multiple  # tensor-core friendly shapes, and fewer distinct shapes to compile

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        width = self.pad_to or int(math.ceil(longest / self.pad_multiple) * self.pad_multiple)
        n = len(features)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for i, f in enumerate(features):
            ids = f["input_ids"][:width]
            input_ids[i, : len(ids)] = torch.as_tensor(ids)
            labels[i, : len(ids)] = torch.as_tensor(f["labels"][: len(ids)])
            attention_mask[i, : len(ids)] = 1
        return {"input_ids": input_ids, "labels": labels, "attention_mask": attention_mask}


class TokenBudgetBatchSampler:
    """Micro-batches of similar-length examples whose padded size (rows x longest) fits max_tokens.

    Examples are shuffled, then sorted by length inside windows of `window` examples, cut into
    batches, and the batches shuffled: length grouping with randomness, deterministic per seed and epoch.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, seed: int = 42, window: int = 2048,
                 max_rows: int = 1024, pad_multiple: int = 8):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        if len(self.lengths) and self.lengths.max() > max_tokens:
            raise ValueError(f"max_tokens_per_batch={max_tokens} is smaller than the longest example "
                             f"({int(self.lengths.max())} tokens); raise it to at least max_seq_length")
        self.max_tokens = max_tokens
        self.seed = seed
        self.window = window
        self.max_rows = max_rows
        self.pad_multiple = pad_multiple
        self.epoch = 0
        self._batches_cache: dict[int, list[list[int]]] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _padded(self, length: int) -> int:
        return int(math.ceil(length / self.pad_multiple) * self.pad_multiple)

    def batches(self, epoch: int) -> list[list[int]]:
        if epoch in self._batches_cache:
            return self._batches_cache[epoch]
        rng = np.random.default_rng(self.seed + epoch)
        order = rng.permutation(len(self.lengths))
        batches: list[list[int]] = []
        for start in range(0, len(order), self.window):
            chunk = order[start : start + self.window]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            current: list[int] = []
            longest = 0
            for idx in chunk:
                new_longest = max(longest, self._padded(int(self.lengths[idx])))
                if current and (new_longest * (len(current) + 1) > self.max_tokens or len(current) >= self.max_rows):
                    batches.append(current)
                    current, new_longest = [], self._padded(int(self.lengths[idx]))
                current.append(int(idx))
                longest = new_longest
            if current:
                batches.append(current)
        perm = rng.permutation(len(batches))
        self._batches_cache = {epoch: [batches[i] for i in perm]}
        return self._batches_cache[epoch]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches(self.epoch)

    def __len__(self) -> int:
        return len(self.batches(self.epoch))


def padding_stats(lengths: Sequence[int], batches: Sequence[Sequence[int]], pad_to: int | None = None) -> dict:
    """Share of real tokens in the padded batches: how much compute goes to padding."""
    lengths = np.asarray(lengths)
    real = padded = 0
    for b in batches:
        ls = lengths[list(b)]
        real += int(ls.sum())
        padded += (pad_to or int(ls.max())) * len(b)
    return {"real_tokens": real, "padded_tokens": padded, "real_share": real / padded if padded else 0.0}
