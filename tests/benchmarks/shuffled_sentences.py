"""A real-text binary classification set, for experiments where SST-2 cannot be downloaded.

Label 1: a sentence of real English (from WikiText-2); label 0: the same words in a random order. The
words, their counts and the length are identical in both classes, so only word order tells them apart:
a pre-trained encoder separates them easily, a random one does not. It is laid out like the hub's
stanfordnlp/sst2 repo (data/train-00000-of-00001.parquet, data/validation-00000-of-00001.parquet;
columns idx, sentence, label), so `train.py --task sst2 --data-dir DIR` reads it as it reads SST-2.

    python -m tests.benchmarks.shuffled_sentences wiki.valid.tokens /tmp/shuffled

Used by hand and by benchmarks only, never by the tests (they read no file outside the repository).
"""

import argparse
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MIN_WORDS, MAX_WORDS = 8, 40  # SST-2's sentences are short: keep sentences of this many words
TEST_SHARE = 0.2  # the last 20% of the sentences (in text order) become the "validation" file = our test split


def sentences(text: str) -> list[str]:
    """Sentences of MIN_WORDS..MAX_WORDS words from WikiText lines (headings and empty lines dropped)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("="):
            continue
        for sentence in re.split(r"(?<= \.) ", line):
            words = sentence.split()
            if MIN_WORDS <= len(words) <= MAX_WORDS:
                found.append(" ".join(words))
    return found


def build(text_file: Path, out_dir: Path, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    rows = []
    for sentence in sentences(text_file.read_text(encoding="utf-8")):
        label = rng.randrange(2)
        words = sentence.split()
        if label == 0:
            while words == sentence.split():  # really shuffled
                rng.shuffle(words)
        rows.append((" ".join(words), label))
    cut = int(len(rows) * (1 - TEST_SHARE))
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    sizes = {}
    for split, part in (("train", rows[:cut]), ("validation", rows[cut:])):
        texts, labels = [t for t, _ in part], [y for _, y in part]
        table = pa.table({"idx": list(range(len(part))), "sentence": texts, "label": labels})
        pq.write_table(table, out_dir / "data" / f"{split}-00000-of-00001.parquet")
        sizes[split] = len(part)
    return sizes


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text_file", type=Path, help="WikiText-2 text, e.g. wiki.valid.tokens")
    p.add_argument("out_dir", type=Path, help="where data/*.parquet go")
    p.add_argument("--seed", type=int, default=0, help="seed of the labels and the shuffles")
    args = p.parse_args()
    print(build(args.text_file, args.out_dir, args.seed))
