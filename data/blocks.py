"""From lines of text to fixed-length blocks of token ids: [CLS] w1 ... w_{T-2} [SEP].

BERT was pre-trained on contiguous spans of text packed to the full sequence length (Devlin et al.
2019, Appendix A.2), not on single padded sentences. We do the same: tokenise every non-empty line
(the fast Rust tokenizer, in batches), concatenate all the WordPieces of the split, and cut them into
blocks of max_seq_len - 2 pieces, each wrapped in [CLS] ... [SEP]. No block is padded, so no compute
is spent on padding; the last, shorter remainder (under one block) is dropped.

Tokenising the 2M-word train split takes a few seconds; the blocks are cached (data/cache.py) under a
hash of the tokenizer, the text and the block size, so a second run starts instantly and a change to
any of the three builds new blocks.
"""

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from data.cache import cached_arrays


def build_blocks(lines: list[str], tokenizer: Tokenizer, max_seq_len: int, cache_dir: Path | None = None) -> np.ndarray:
    """(n_blocks, max_seq_len) token ids, cached under cache_dir (None: no cache)."""
    if max_seq_len < 3:
        raise ValueError(f"max_seq_len must be at least 3 ([CLS] piece [SEP]), got {max_seq_len}")
    key = [tokenizer.to_str(), "\n".join(lines), str(max_seq_len)]
    return cached_arrays(cache_dir, "blocks", key, lambda: {"blocks": pack(lines, tokenizer, max_seq_len)})["blocks"]


def pack(lines: list[str], tokenizer: Tokenizer, max_seq_len: int) -> np.ndarray:
    texts = [line.strip() for line in lines if line.strip()]  # WikiText has many empty lines
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)  # parallel, in Rust
    ids = np.fromiter((i for e in encodings for i in e.ids), dtype=np.int32)  # every piece of the split, in order
    body = max_seq_len - 2  # room for [CLS] and [SEP]
    n_blocks = len(ids) // body
    if n_blocks == 0:
        raise ValueError(f"the text has {len(ids)} WordPieces: not enough for one block of {max_seq_len}")
    blocks = np.empty((n_blocks, max_seq_len), dtype=np.int32)
    blocks[:, 0] = tokenizer.token_to_id("[CLS]")
    blocks[:, 1:-1] = ids[: n_blocks * body].reshape(n_blocks, body)  # (n_blocks, T - 2)
    blocks[:, -1] = tokenizer.token_to_id("[SEP]")
    return blocks
