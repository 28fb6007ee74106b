"""Labelled texts as token ids: one sequence per example, of varying length.

    a single text   [CLS] a1 ... an [SEP]
    a pair          [CLS] a1 ... an [SEP] b1 ... bm [SEP]     segment (token type) 0 up to the first [SEP], 1 after

as BERT takes them (Devlin et al. 2019, Section 3, "Input/Output Representations"). Unlike the masked-LM
blocks (data/blocks.py), an example keeps its own length. The ids of all examples are stored one after
another in a single array with an offset table (example i is ids[offsets[i]:offsets[i+1]]), so 25,000
IMDB reviews are two numpy arrays, cached on disk (data/cache.py).

Truncation to max_seq_len, with the budget B = max_seq_len - 2 pieces (single) or - 3 (pair):
  single  the first B pieces (head truncation);
  pair    "longest_first", as Hugging Face's tokenizers do by default for pairs: if the shorter text fits in
          half the budget it is kept whole and the longer is cut to the rest; otherwise each gets half, the
          odd piece going to the longer (to the second on a tie). `truncate_pair` writes it out.
Every truncated example is counted, so a run can say how many it cut.

A batch pads its examples to the longest one in it, with an attention mask (1 = token, 0 = padding), so
no example pays for more padding than its batch needs; data/buckets.py makes batches of similar lengths.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from data.cache import cached_arrays


@dataclass
class Examples:
    ids: np.ndarray  # (total tokens,) int32: the examples' sequences, one after another
    offsets: np.ndarray  # (n + 1,) int64: example i is ids[offsets[i] : offsets[i + 1]]
    labels: np.ndarray  # (n,) int64 class ids, or float32 regression targets
    truncated: int  # how many examples were cut to max_seq_len
    first_lengths: np.ndarray | None = None  # (n,) pairs: tokens of [CLS] a [SEP], segment 0; None: single texts

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (n,) tokens per example, [CLS] and [SEP]s included

    def batch(self, indices, pad_id: int) -> dict[str, torch.Tensor]:
        """The examples `indices`, padded to the longest: input_ids, attention_mask (B, T), labels (B,), and
        for pairs token_type_ids (B, T): 1 from the second text on (padding: 0, as transformers pads)."""
        lengths = self.lengths[indices]
        input_ids = np.full((len(indices), int(lengths.max(initial=1))), pad_id, dtype=np.int64)  # (B, T)
        for row, i in enumerate(indices):
            input_ids[row, : lengths[row]] = self.ids[self.offsets[i] : self.offsets[i + 1]]
        positions = np.arange(input_ids.shape[1])[None, :]  # (1, T)
        attention_mask = positions < lengths[:, None]  # (B, T): 1 = token
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
            "labels": torch.from_numpy(self.labels[indices]),
        }
        if self.first_lengths is not None:
            second = (positions >= self.first_lengths[indices][:, None]) & attention_mask  # (B, T)
            batch["token_type_ids"] = torch.from_numpy(second.astype(np.int64))
        return batch


def truncate_pair(n_a: int, n_b: int, budget: int) -> tuple[int, int]:
    """How many pieces of a and of b a pair keeps within `budget` ("longest_first", see the module doc)."""
    if n_a + n_b <= budget:
        return n_a, n_b
    shorter = min(n_a, n_b)
    if 2 * shorter <= budget:  # the shorter fits in half: keep it whole, cut the longer to the rest
        kept_short, kept_long = shorter, budget - shorter
    else:  # both are cut to half the budget; the odd piece goes to the longer
        kept_short, kept_long = budget // 2, budget - budget // 2
    return (kept_short, kept_long) if n_a <= n_b else (kept_long, kept_short)  # a tie: a is the "shorter"


def encode_examples(
    texts: list[str],
    labels: np.ndarray,
    tokenizer: Tokenizer,
    max_seq_len: int,
    cache_dir: Path | None = None,
    pairs: list[str] | None = None,
) -> Examples:
    """Tokenise every text (or pair, see the module doc), at most max_seq_len tokens (cached under cache_dir)."""
    if max_seq_len < 3 + (pairs is not None):
        raise ValueError(
            f"max_seq_len must be at least {3 + (pairs is not None)} for these examples, got {max_seq_len}"
        )
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")

    def build():
        first = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]  # parallel, in Rust
        if pairs is None:
            body = max_seq_len - 2  # room for [CLS] and [SEP]
            sequences = [[cls, *a[:body], sep] for a in first]
            truncated = sum(len(a) > body for a in first)
            first_lengths = np.zeros(0, dtype=np.int64)
        else:
            second = [e.ids for e in tokenizer.encode_batch(pairs, add_special_tokens=False)]
            budget = max_seq_len - 3  # room for [CLS] and two [SEP]
            kept = [truncate_pair(len(a), len(b), budget) for a, b in zip(first, second, strict=True)]
            sequences, truncated = [], 0
            for a, b, (ka, kb) in zip(first, second, kept, strict=True):
                sequences.append([cls, *a[:ka], sep, *b[:kb], sep])
                truncated += ka + kb < len(a) + len(b)
            first_lengths = np.array([ka + 2 for ka, _ in kept], dtype=np.int64)  # [CLS] a [SEP]
        lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        ids = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(lengths.sum()))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return {"ids": ids, "offsets": offsets, "truncated": np.array(truncated), "first_lengths": first_lengths}

    key = [tokenizer.to_str(), "\0".join(texts), "\0".join(pairs) if pairs is not None else "\1", str(max_seq_len)]
    arrays = cached_arrays(cache_dir, "examples", key, build)
    first_lengths = arrays["first_lengths"] if pairs is not None else None
    return Examples(arrays["ids"], arrays["offsets"], np.asarray(labels), int(arrays["truncated"]), first_lengths)
