"""Tiny random Hugging Face checkpoints, built and saved by the tests themselves (never downloaded).

Every parameter, LayerNorms and biases included, is filled with seeded random values, so a weight
loaded into the wrong place cannot hide behind an initialisation of ones or zeros.
"""

import json

import pytest
import torch
import transformers
from safetensors.torch import save_file

TINY_BERT = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
TINY_DISTILBERT = dict(vocab_size=99, dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=64)


def randomise_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter with seeded noise (LayerNorm weights around 1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(noise + 1.0 if "norm" in name.lower() and name.endswith("weight") else noise)
    return model.eval()


def hf_model(arch: str, cls_name: str | None = None, seed: int = 0):
    """A tiny random transformers model: arch 'bert' (BertForMaskedLM) or 'distilbert' (DistilBertForMaskedLM)."""
    torch.manual_seed(seed)
    if arch == "bert":
        config = transformers.BertConfig(**TINY_BERT)
        cls = getattr(transformers, cls_name or "BertForMaskedLM")
    else:
        config = transformers.DistilBertConfig(**TINY_DISTILBERT)
        cls = getattr(transformers, cls_name or "DistilBertForMaskedLM")
    return randomise_(cls(config), seed)


def save_hf(model, directory):
    """save_pretrained as safetensors; returns the directory."""
    model.save_pretrained(directory, safe_serialization=True)
    return directory


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory):
    model = hf_model("bert")
    return save_hf(model, tmp_path_factory.mktemp("tiny-bert")), model


@pytest.fixture(scope="session")
def distilbert_dir(tmp_path_factory):
    model = hf_model("distilbert")
    return save_hf(model, tmp_path_factory.mktemp("tiny-distilbert")), model


@pytest.fixture(scope="session")
def legacy_bert_dir(tmp_path_factory, bert_dir):
    """The layout of the hub's real bert-base-uncased file: LayerNorm.gamma/beta, pooler, NSP head,
    the tied decoder stored as a copy, and the position_ids buffer."""
    directory, model = bert_dir
    out = tmp_path_factory.mktemp("tiny-bert-legacy")
    state = {}
    for key, value in model.state_dict().items():
        key = key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        state[key] = value.clone().contiguous()
    g = torch.Generator().manual_seed(1)
    H = TINY_BERT["hidden_size"]
    state["bert.pooler.dense.weight"] = torch.randn(H, H, generator=g)
    state["bert.pooler.dense.bias"] = torch.randn(H, generator=g)
    state["cls.seq_relationship.weight"] = torch.randn(2, H, generator=g)
    state["cls.seq_relationship.bias"] = torch.randn(2, generator=g)
    state["cls.predictions.decoder.weight"] = model.bert.embeddings.word_embeddings.weight.detach().clone()
    state["cls.predictions.decoder.bias"] = model.cls.predictions.bias.detach().clone()
    state["bert.embeddings.position_ids"] = torch.arange(TINY_BERT["max_position_embeddings"])[None]
    save_file(state, str(out / "model.safetensors"))
    config = json.loads((directory / "config.json").read_text())
    config["architectures"] = ["BertForPreTraining"]
    (out / "config.json").write_text(json.dumps(config))
    return out, model


# ---- a tiny corpus and a tiny model whose vocabulary covers it, for data/, train.py and evaluate.py ----

CORPUS_WORDS = (
    "the a cat dog bird sat ran flew on under over mat log tree red blue green big small quickly slowly "
    "and then it was happy sad morning evening river hill house garden"
).split()
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus_lines(n_lines: int, seed: int) -> list[str]:
    """WikiText-like lines: headings, empty lines, and sentences with a learnable structure."""
    g = torch.Generator().manual_seed(seed)
    lines = []
    for i in range(n_lines):
        if i % 10 == 0:
            lines += ["", f" = {CORPUS_WORDS[i % len(CORPUS_WORDS)]} = ", ""]
        words = [CORPUS_WORDS[int(j)] for j in torch.randint(len(CORPUS_WORDS), (6,), generator=g)]
        lines.append(f" the {words[0]} sat on the {words[1]} , and then the {words[2]} {words[3]} . ")
    return lines


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """The same splits in both layouts: {"text": dir with wiki.*.raw, "parquet": dir with the hub's files}."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("wikitext")
    splits = {"train": corpus_lines(300, 0), "validation": corpus_lines(40, 1), "test": corpus_lines(40, 2)}
    (root / "text").mkdir()
    (root / "parquet" / "wikitext-2-raw-v1").mkdir(parents=True)
    for split, lines in splits.items():
        name = {"train": "train", "validation": "valid", "test": "test"}[split]
        (root / "text" / f"wiki.{name}.raw").write_text("\n".join(lines) + "\n", encoding="utf-8")
        table = pa.table({"text": [line + "\n" for line in lines]})
        pq.write_table(table, root / "parquet" / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    return {"text": root / "text", "parquet": root / "parquet", "lines": splits}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random BERT (no dropout in the base) with a vocab.txt covering the corpus."""
    return tiny_vocab_model(tmp_path_factory.mktemp("tiny-mlm"), randomise=False)


@pytest.fixture(scope="session")
def tiny_rich_model_dir(tmp_path_factory):
    """The same, with every weight drawn with std 0.2 (randomise_) instead of BERT's 0.02: its [CLS] vector
    carries enough of the sentence for a frozen encoder (the `head` baseline) to be probed, as a
    pre-trained one's does. HiRA's update W0 ⊙ BA also scales with W0, as it does on real weights."""
    return tiny_vocab_model(tmp_path_factory.mktemp("tiny-rich"), randomise=True)


@pytest.fixture(scope="session")
def tiny_distilbert_model_dir(tmp_path_factory):
    """A tiny random DistilBERT (no dropout) with a vocab.txt covering the corpus."""
    return tiny_vocab_model(tmp_path_factory.mktemp("tiny-distil"), randomise=False, arch="distilbert")


def tiny_vocab_model(directory, randomise: bool, arch: str = "bert"):
    vocab = SPECIAL_TOKENS + CORPUS_WORDS + [",", ".", "="]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # the tiny shapes with this vocabulary, a wider feed-forward layer and no dropout
    if arch == "bert":
        config = transformers.BertConfig(**{**TINY_BERT, "vocab_size": len(vocab), "intermediate_size": 64},
                                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    else:
        config = transformers.DistilBertConfig(**{**TINY_DISTILBERT, "vocab_size": len(vocab), "hidden_dim": 64},
                                               dropout=0.0, attention_dropout=0.0)  # fmt: skip
    torch.manual_seed(0)
    model = (transformers.BertForMaskedLM if arch == "bert" else transformers.DistilBertForMaskedLM)(config)
    save_hf(randomise_(model) if randomise else model, directory)
    return directory


# ---- a tiny labelled sentiment set, in the hub's layouts of SST-2 and IMDB, for the classification tasks ----


def sentiment_rows(n: int, seed: int) -> tuple[list[str], list[int]]:
    """Sentences of 3 to 24 words; label 1 if the sentence says "happy", 0 if it says "sad" (random place)."""
    g = torch.Generator().manual_seed(seed)
    neutral = [w for w in CORPUS_WORDS if w not in ("happy", "sad")]
    texts, labels = [], []
    for _ in range(n):
        length = int(torch.randint(3, 25, (1,), generator=g))
        words = [neutral[int(j)] for j in torch.randint(len(neutral), (length,), generator=g)]
        label = int(torch.randint(2, (1,), generator=g))
        words.insert(int(torch.randint(length + 1, (1,), generator=g)), "happy" if label else "sad")
        texts.append(" ".join(words) + " .")
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def sentiment(tmp_path_factory):
    """{"sst2": dir, "imdb": dir} laid out as the hub repos (data/*.parquet; plain_text/*.parquet).
    SST-2's test file has hidden labels (-1), as the real one does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("sentiment")
    train, test = sentiment_rows(1400, 0), sentiment_rows(300, 1)
    layouts = {
        "sst2": ("data", "sentence", {"train": train, "validation": test, "test": (test[0], [-1] * len(test[0]))}),
        "imdb": ("plain_text", "text", {"train": train, "test": test}),
    }
    dirs = {}
    for name, (folder, column, splits) in layouts.items():
        (root / name / folder).mkdir(parents=True)
        for split, (texts, labels) in splits.items():
            table = pa.table({"idx": list(range(len(texts))), column: texts, "label": labels})
            pq.write_table(table, root / name / folder / f"{split}-00000-of-00001.parquet")
        dirs[name] = root / name
    return dirs


# ---- sentence pairs, in the hub's GLUE layout (nyu-mll/glue) and as a user's files ----


def pair_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(a, b, relation): a says "happy" or "sad"; b says the same word ("same"), the other ("opposite") or
    "river" ("other"), each among 2 to 12 random neutral words."""
    g = torch.Generator().manual_seed(seed)
    neutral = [w for w in CORPUS_WORDS if w not in ("happy", "sad", "river")]

    def sentence(word):
        length = int(torch.randint(2, 13, (1,), generator=g))
        words = [neutral[int(j)] for j in torch.randint(len(neutral), (length,), generator=g)]
        words.insert(int(torch.randint(length + 1, (1,), generator=g)), word)
        return " ".join(words) + " ."

    rows = []
    for _ in range(n):
        first = ("happy", "sad")[int(torch.randint(2, (1,), generator=g))]
        relation = ("same", "opposite", "other")[int(torch.randint(3, (1,), generator=g))]
        second = {"same": first, "opposite": "sad" if first == "happy" else "happy", "other": "river"}[relation]
        rows.append((sentence(first), sentence(second), relation))
    return rows


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    """cola, rte, stsb and mnli in nyu-mll/glue's layout (<task>/<split>-00000-of-00001.parquet), test labels
    hidden (-1) as GLUE's are."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("glue")

    def save(task, split, columns):
        (root / task).mkdir(exist_ok=True)
        pq.write_table(pa.table(columns), root / task / f"{split}-00000-of-00001.parquet")

    for split, n, seed in (("train", 600, 0), ("validation", 120, 1), ("test", 50, 2)):
        texts, labels = sentiment_rows(n, seed)
        hidden = split == "test"
        save("cola", split, {"sentence": texts, "label": [-1 if hidden else y for y in labels], "idx": list(range(n))})
        rows = pair_rows(n, seed)
        a, b = [r[0] for r in rows], [r[1] for r in rows]
        rte = [-1 if hidden else int(r[2] != "same") for r in rows]  # 0 entailment, 1 not_entailment
        save("rte", split, {"sentence1": a, "sentence2": b, "label": rte})
        # a score that adds up what each sentence says (learnable from [CLS] in a few steps): 0.5 to 4.9
        score = [-1.0 if hidden else 0.5 + 2.0 * ("happy" in r[0]) + 1.5 * ("happy" in r[1]) + 0.1 * (i % 5)
                 for i, r in enumerate(rows)]  # fmt: skip
        save("stsb", split, {"sentence1": a, "sentence2": b, "label": score})
        mnli = [-1 if hidden else {"same": 0, "other": 1, "opposite": 2}[r[2]] for r in rows]
        names = {"validation": ["validation_matched", "validation_mismatched"], "test": ["test_matched"]}
        for name in names.get(split, [split]):
            save("mnli", name, {"premise": a, "hypothesis": b, "label": mnli})
    return root
