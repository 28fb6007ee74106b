"""Batches of examples of similar length, in a random order: little padding, still shuffled.

Padding every batch to its longest example costs nothing when the lengths are alike, and a lot when a
40-token review shares a batch with a 512-token one (IMDB's lengths run from ~10 to 512). Sorting the
whole split by length would give the least padding but the same batches every epoch, in order of length:
a bias in what the model sees first. The usual middle way ("bucketing", e.g. fairseq's and AllenNLP's
bucket iterators), done here explicitly:

  1. shuffle all example indices (seeded by (seed, epoch): a resumed run draws the same order);
  2. cut the shuffled list into buckets of BUCKET_BATCHES batches' worth of examples;
  3. sort each bucket by length and cut it into batches: neighbours in a batch have similar lengths;
  4. shuffle the order of all the batches.

Every example is in exactly one batch per epoch; the last batch of the last bucket may be short.
"""

import numpy as np
import torch

BUCKET_BATCHES = 50  # batches per bucket: larger means less padding, smaller means more randomness


def bucketed_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    """One epoch's batches: a list of index arrays, every example exactly once."""
    order = torch.randperm(len(lengths), generator=generator).numpy()  # 1. shuffle
    bucket = BUCKET_BATCHES * batch_size
    batches = []
    for start in range(0, len(order), bucket):
        chunk = order[start : start + bucket]  # 2. a bucket
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]  # 3. sorted by length ...
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]  # ... cut into batches
    shuffled = torch.randperm(len(batches), generator=generator).tolist()  # 4. shuffle the batches
    return [batches[i] for i in shuffled]


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """The share of the padded batches' positions that are padding."""
    real = sum(int(lengths[b].sum()) for b in batches)
    padded = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - real / padded
