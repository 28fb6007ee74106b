"""Labelled texts as token ids: one [CLS] w1 ... wn [SEP] sequence per example, of varying length.

Unlike the masked-LM blocks (data/blocks.py), an example is one text and keeps its own length. The ids of
all examples are stored one after another in a single array with an offset table (example i is
ids[offsets[i]:offsets[i+1]]), so 25,000 IMDB reviews are two numpy arrays, cached on disk
(data/cache.py). A text longer than max_seq_len - 2 pieces keeps its first max_seq_len - 2 pieces (the
usual head truncation) and is counted, so a run can say how many it cut.

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
    ids: np.ndarray  # (total tokens,) int32: the examples' [CLS] ... [SEP] sequences, one after another
    offsets: np.ndarray  # (n + 1,) int64: example i is ids[offsets[i] : offsets[i + 1]]
    labels: np.ndarray  # (n,) int64: the class of each example
    truncated: int  # how many examples were cut to max_seq_len

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (n,) tokens per example, [CLS] and [SEP] included

    def batch(self, indices, pad_id: int) -> dict[str, torch.Tensor]:
        """The examples `indices`, padded to the longest: input_ids, attention_mask (B, T), labels (B,)."""
        lengths = self.lengths[indices]
        input_ids = np.full((len(indices), int(lengths.max(initial=1))), pad_id, dtype=np.int64)  # (B, T)
        for row, i in enumerate(indices):
            input_ids[row, : lengths[row]] = self.ids[self.offsets[i] : self.offsets[i + 1]]
        attention_mask = np.arange(input_ids.shape[1])[None, :] < lengths[:, None]  # (B, T): 1 = token
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
            "labels": torch.from_numpy(self.labels[indices]),
        }


def encode_examples(
    texts: list[str], labels: np.ndarray, tokenizer: Tokenizer, max_seq_len: int, cache_dir: Path | None = None
) -> Examples:
    """Tokenise every text into [CLS] pieces [SEP], at most max_seq_len tokens (cached under cache_dir)."""
    if max_seq_len < 3:
        raise ValueError(f"max_seq_len must be at least 3 ([CLS] piece [SEP]), got {max_seq_len}")

    def build():
        encodings = tokenizer.encode_batch(texts, add_special_tokens=False)  # parallel, in Rust
        body = max_seq_len - 2  # room for [CLS] and [SEP]
        cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
        pieces = [e.ids[:body] for e in encodings]
        lengths = np.array([len(p) + 2 for p in pieces], dtype=np.int64)
        ids = np.fromiter((i for p in pieces for i in (cls, *p, sep)), dtype=np.int32, count=int(lengths.sum()))
        truncated = sum(len(e.ids) > body for e in encodings)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return {"ids": ids, "offsets": offsets, "truncated": np.array(truncated)}

    key = [tokenizer.to_str(), "\0".join(texts), str(max_seq_len)]
    arrays = cached_arrays(cache_dir, "examples", key, build)
    return Examples(arrays["ids"], arrays["offsets"], np.asarray(labels, dtype=np.int64), int(arrays["truncated"]))
