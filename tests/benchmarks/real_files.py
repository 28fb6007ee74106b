"""Real-text files in the three shapes `train.py --train-file` reads, for experiments on a real encoder where
GLUE cannot be downloaded. From WikiText-2 text (its articles start with " = Title = " lines):

  topics-{train,test}.csv      K-class: a sentence -> the title of the article it comes from, among the
                               TOPICS articles with the most sentences (string labels, sorted by train.py;
                               titles with <unk> left out)
  next-{train,test}.jsonl      sentence pairs (BERT's next-sentence task): sentence1, sentence2 and the label
                               "next" (sentence2 follows sentence1 in the article) or "random" (it comes
                               from another article)
  disorder-{train,test}.tsv    regression: a sentence with a share of its words shuffled among themselves;
                               the score is that share (0 to 1)

Each split is a seeded 80/20 cut of the examples. Used by hand and by benchmarks only, never by the tests.

    python -m tests.benchmarks.real_files wiki.valid.tokens /tmp/real-files
"""

import argparse
import csv
import json
import random
from collections import Counter
from pathlib import Path

from tests.benchmarks.shuffled_sentences import MAX_WORDS, MIN_WORDS

TOPICS = 5  # classes of the topic task
TEST_SHARE = 0.2


def articles(text: str) -> list[tuple[str, list[str]]]:
    """(title, sentences of MIN_WORDS..MAX_WORDS words) per article, in text order."""
    found, title = [], None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("= ") and not line.startswith("= ="):
            title = line.strip("= ").strip()
            found.append((title, []))
        elif line and not line.startswith("=") and found:
            for sentence in line.split(" . "):
                words = sentence.split()
                if MIN_WORDS <= len(words) <= MAX_WORDS:
                    found[-1][1].append(" ".join(words).removesuffix(" .") + " .")
    return found


def cut(rows: list, rng: random.Random) -> dict[str, list]:
    rng.shuffle(rows)
    n_test = int(len(rows) * TEST_SHARE)
    return {"train": rows[n_test:], "test": rows[:n_test]}


def build(text_file: Path, out_dir: Path, seed: int = 0) -> dict[str, int]:
    rng = random.Random(seed)
    found = articles(text_file.read_text(encoding="utf-8"))
    out_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}

    named = {title: sentences for title, sentences in found if "<unk>" not in title}  # a title is a class name
    biggest = Counter({title: len(sentences) for title, sentences in named.items()}).most_common(TOPICS)
    topics = [{"sentence": s, "label": title} for title, _ in biggest for s in named[title]]
    for split, rows in cut(topics, rng).items():
        with (out_dir / f"topics-{split}.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["sentence", "label"])
            writer.writeheader()
            writer.writerows(rows)
        sizes[f"topics-{split}"] = len(rows)

    pairs = []
    for i, (_, sentences) in enumerate(found):
        others = [s for j, (_, ss) in enumerate(found) if j != i for s in ss]
        for a, b in zip(sentences, sentences[1:], strict=False):
            random_b = rng.choice(others) if others else b
            pairs.append({"sentence1": a, "sentence2": b if rng.random() < 0.5 else random_b})
            pairs[-1]["label"] = "next" if pairs[-1]["sentence2"] == b else "random"
    for split, rows in cut(pairs, rng).items():
        (out_dir / f"next-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        sizes[f"next-{split}"] = len(rows)

    disorder = []
    for _, sentences in found:
        for sentence in sentences:
            words = sentence.split()
            k = rng.randint(0, len(words))  # how many words are moved
            chosen = sorted(rng.sample(range(len(words)), k))
            moved = [words[i] for i in chosen]
            rng.shuffle(moved)
            for i, word in zip(chosen, moved, strict=True):
                words[i] = word
            share = sum(a != b for a, b in zip(words, sentence.split(), strict=True)) / len(words)
            disorder.append((" ".join(words), f"{share:.4f}"))
    for split, rows in cut(disorder, rng).items():
        lines = ["text\tscore"] + [f"{text}\t{score}" for text, score in rows]
        (out_dir / f"disorder-{split}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        sizes[f"disorder-{split}"] = len(rows)
    return sizes


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text_file", type=Path, help="WikiText-2 text, e.g. wiki.valid.tokens")
    p.add_argument("out_dir", type=Path, help="where the files go")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits, the pairs and the shuffles")
    args = p.parse_args()
    print(build(args.text_file, args.out_dir, args.seed))
