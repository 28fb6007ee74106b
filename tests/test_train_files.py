"""train.py, evaluate.py and predict.py on your own files: a 3-class CSV with string labels, sentence pairs
from JSON Lines, a regression CSV, masked LM on a .txt file; no test file; and every kind of bad input as
one line, exit 2, nothing written."""

import csv
import json
import re

import pytest

import evaluate
import predict
import train
from tests.conftest import corpus_lines, pair_rows, sentiment_rows
from tests.test_train import fails_cleanly

MOODS = {"happy": "joy", "sad": "grief"}  # K = 3: joy, grief, or neither ("calm")


def three_classes(n: int, seed: int) -> list[dict]:
    texts, _ = sentiment_rows(n, seed)
    rows = []
    for i, text in enumerate(texts):
        if i % 3 == 2:  # a third of them: the mood word replaced by a neutral one
            text = text.replace("happy", "river").replace("sad", "river")
        label = next((name for word, name in MOODS.items() if word in text.split()), "calm")
        rows.append({"id": str(i), "review": text, "label": label})
    return rows


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("files")
    out = {"train.csv": write_csv(root / "moods-train.csv", three_classes(900, 0)),
           "test.csv": write_csv(root / "moods-test.csv", three_classes(150, 1))}  # fmt: skip
    for split, n, seed in (("train", 900, 0), ("test", 150, 1)):
        rows = [{"premise": a, "hypothesis": b, "label": relation} for a, b, relation in pair_rows(n, seed)]
        path = root / "pairs" / f"{split}.jsonl"
        path.parent.mkdir(exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        out[f"pairs-{split}"] = path
        texts, labels = sentiment_rows(n, seed)
        out[f"scores-{split}"] = write_csv(root / f"scores-{split}.csv",
                                           [{"text": t, "score": f"{3.5 * y + 0.1 * (i % 5):.2f}"}
                                            for i, (t, y) in enumerate(zip(texts, labels, strict=True))])  # fmt: skip
    (root / "notes.txt").write_text("\n".join(corpus_lines(300, 0)) + "\n", encoding="utf-8")
    (root / "notes-test.txt").write_text("\n".join(corpus_lines(40, 2)) + "\n", encoding="utf-8")
    out["notes.txt"], out["notes-test.txt"] = root / "notes.txt", root / "notes-test.txt"
    return out


def file_args(model_dir, out_dir, *extra):
    return ["--method", "lora", "--model", str(model_dir), "--output-dir", str(out_dir), "--batch-size", "16",
            "--lr", "5e-3", "--warmup-steps", "5", "--max-steps", "60", "--eval-every", "20", "--max-seq-len", "32",
            "--log-every", "5", "--target-modules", "query,key,value,dense",
            "--cache-dir", str(out_dir.parent / "cache"), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def runs(files, tiny_model_dir, tiny_rich_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("file-runs")
    commands = {
        "moods": (
            tiny_rich_model_dir,
            [
                "--train-file",
                files["train.csv"],
                "--test-file",
                files["test.csv"],
                "--text-column",
                "review",
                "--max-steps",
                "150",
            ],
        ),  # not a default name
        "pairs": (tiny_rich_model_dir, ["--train-file", files["pairs-train"], "--test-file", files["pairs-test"]]),
        "scores": (
            tiny_model_dir,
            ["--train-file", files["scores-train"], "--test-file", files["scores-test"], "--max-steps", "150"],
        ),  # see test_glue.py: a score takes longer  # fmt: skip
        "notes": (tiny_model_dir, ["--train-file", files["notes.txt"], "--test-file", files["notes-test.txt"]]),
        "no-test": (
            tiny_rich_model_dir,
            ["--train-file", files["train.csv"], "--text-column", "review", "--max-steps", "20"],
        ),
    }
    for name, (model, extra) in commands.items():
        assert train.main(file_args(model, root / name, *map(str, extra))) == 0, name
    return root


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_three_classes_from_a_csv(runs):
    m = metrics_of(runs / "moods")
    assert m["task"] == "moods-train" and m["task_kind"] == "classification"
    assert m["label_names"] == ["calm", "grief", "joy"]  # sorted, as run_glue.py sorts them
    assert m["train_examples"] == 810 and m["validation_examples"] == 90 and m["test_examples"] == 150
    # chance is 1/3 (one standard error: 0.04); measured 0.64: joy learnt, grief still taken for calm
    assert m["metric_names"] == ["accuracy", "macro_f1"] and m["test_accuracy"] > 0.55
    card = (runs / "moods" / "README.md").read_text()
    assert "Labels: calm, grief, joy." in card and "num_labels=3" in card and f"{m['test_accuracy']:.4f}" in card


def test_pairs_from_json_lines(runs):
    m = metrics_of(runs / "pairs")
    assert m["text_pairs"] and m["label_names"] == ["opposite", "other", "same"]
    # "other" (the second text says river) is learnt from the pair; telling "same" from "opposite" needs
    # both texts compared: more than 60 steps of a tiny model. Chance is 1/3.
    assert m["test_accuracy"] > 0.5


def test_regression_from_a_csv(runs):
    m = metrics_of(runs / "scores")
    assert m["task_kind"] == "regression" and m["label_names"] == []
    assert m["metric_names"] == ["pearson", "spearman", "mse"] and m["test_pearson"] > 0.7
    card = (runs / "scores" / "README.md").read_text()
    assert 'num_labels=1, problem_type="regression"' in card and "One score per example." in card


def test_masked_lm_on_a_text_file(runs):
    m = metrics_of(runs / "notes")
    assert m["task_kind"] == "mlm" and m["test_perplexity"] < 40  # the corpus is 39 words: chance ~39
    assert m["validation_blocks"] > 0 and m["train_blocks"] > m["validation_blocks"]  # 10% of the blocks


def test_no_test_file(runs, capsys):
    m = metrics_of(runs / "no-test")
    assert m["test_splits"] == [] and not any(key.startswith("test_") for key in m if key != "test_splits")
    assert "no test file was given: no test metrics" in (runs / "no-test" / "README.md").read_text()


def test_evaluate_and_predict_use_the_runs_files_and_labels(runs, tmp_path, capsys):
    results = tmp_path / "results"
    argv = [str(runs / name) for name in ("moods", "no-test")] + ["--output-dir", str(results),
                                                                  "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert evaluate.main(argv) == 1  # the run without a test file is skipped, the other compared
    err = capsys.readouterr().err
    assert "trained without a --test-file, so there is nothing to score" in err
    rows = list(csv.DictReader((results / "comparison-moods-train.csv").open()))
    assert float(rows[0]["test_accuracy"]) == pytest.approx(metrics_of(runs / "moods")["test_accuracy"])

    assert predict.main([str(runs / "moods"), "the cat was happy .", "the dog was sad ."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"\s*joy  \(calm 0\.\d{3}, grief 0\.\d{3}, joy 0\.\d{3}\)  the cat was happy \.", lines[0])
    assert len(lines) == 2 and lines[1].endswith("the dog was sad .")
    assert predict.main([str(runs / "pairs"), "the cat was happy . [SEP] the dog was happy ."]) == 0
    assert re.match(r"\s*\w+  \(opposite 0\.\d{3}, other 0\.\d{3}, same 0\.\d{3}\)", capsys.readouterr().out)
    fails_cleanly(capsys, predict.main, [str(runs / "pairs"), "one text only"], "trained on pairs of texts")
    assert predict.main([str(runs / "scores"), "the cat was happy .", "the cat was sad ."]) == 0
    high, low = (float(line.split()[0]) for line in capsys.readouterr().out.splitlines())
    assert high > low  # 3.5 for happy, 0 for sad


def test_the_kind_is_inferred_and_said(files, tiny_model_dir, tmp_path, capsys):
    argv = file_args(tiny_model_dir, tmp_path / "out", "--train-file", str(files["scores-train"]), "--max-steps", "2")
    assert train.main(argv) == 0
    assert "--task regression (inferred from" in capsys.readouterr().err


BAD_INPUT = [  # (file name, content, the line's message)
    ("nohead.csv", "great,1\nawful,0\n" * 20, "is not a header row"),
    ("empty.tsv", "", "the file is empty"),
    ("fields.tsv", "sentence\tlabel\n" + "fine\t1\n" * 20 + "tab\tin\t0\n", "line 22 has 3 tab-separated fields"),
    ("mixed.csv", "text,label\n" + "a,1\n" * 20 + "b,pos\n", "mixed label types"),
    ("column.csv", "body,label\n" + "a,1\nb,0\n" * 10, "no text column found among body, label"),
]


@pytest.mark.parametrize("name, content, message", BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
def test_bad_input_is_one_line(tiny_model_dir, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    err = fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(path)), message)
    assert str(path) in err and len(err.strip().splitlines()) == 1
    assert not out.exists() or not any(out.iterdir())  # nothing written for a run that could not start


def test_bad_labels_bytes_and_flags(files, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    latin = tmp_path / "latin.csv"
    latin.write_bytes(("text,label\n" + "ok,1\n" * 5 + "café,0\n").encode("latin-1"))
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(latin)),
                  "not valid UTF-8 at byte 39 (line 7)")  # 11 + 5 * 5 + len("caf")  # fmt: skip
    unseen = write_csv(tmp_path / "unseen.csv", [{"id": "0", "review": "a", "label": "anger"}])
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(files["train.csv"]),
                                                "--test-file", str(unseen), "--text-column", "review"),
                  "line 2 has label 'anger', which the training file never has")  # fmt: skip
    words = write_csv(tmp_path / "words.csv", [{"text": "a", "score": "high"}, {"text": "b", "score": "low"}])
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(words), "--task",
                                                "regression"),
                  "line 2 has label 'high' in column 'score', not a number")  # fmt: skip
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(files["train.csv"]),
                                                "--label-column", "lbl"), "no column 'lbl'")  # fmt: skip
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--test-file", str(files["test.csv"])),
                  "--test-file is for your own files: add --train-file PATH")  # fmt: skip
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(files["train.csv"]),
                                                "--task", "rte"), "--task rte reads its own dataset")  # fmt: skip
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(tmp_path / "nope.csv")),
                  "nope.csv: no such file")  # fmt: skip
    assert not out.exists() or not any(out.iterdir())


def test_predict_fills_every_mask_of_a_file(runs, tmp_path):
    texts = tmp_path / "masked.txt"
    texts.write_text("the cat sat on the [MASK] .\nthe [MASK] ran under the [MASK] .\n", encoding="utf-8")
    out = tmp_path / "fillers.jsonl"
    assert predict.main([str(runs / "notes"), "--file", str(texts), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == ["the cat sat on the [MASK] .", "the [MASK] ran under the [MASK] ."]
    assert [len(row["prediction"].split()) for row in rows] == [1, 2]  # the top filler of each [MASK]
    for row in rows:
        for mask in row["top5"].split(" | "):
            assert re.fullmatch(r"(\S+ 0\.\d{3}, ){4}\S+ 0\.\d{3}", mask)  # five candidates, most likely first


def mrpc_like(path, n: int, seed: int):
    """A pair file laid out as Microsoft ships MRPC: tab-separated in a .txt, header `Quality  #1 ID  #2 ID
    #1 String  #2 String`, and sentences with unbalanced double quotes, which a CSV-quoting reader would
    merge with the rows after them."""
    lines = ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
    for i, (a, b, relation) in enumerate(pair_rows(n, seed)):
        if i % 7 == 0:
            a = '" ' + a  # an opening quote never closed
        if i % 11 == 0:
            b = b + ' "'
        lines.append(f"{int(relation == 'same')}\t{2 * i}\t{2 * i + 1}\t{a}\t{b}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_tab_separated_txt_with_columns_is_a_pair_table(tiny_model_dir, tmp_path, capsys):
    """MRPC as Microsoft ships it trains the pair classifier asked for, every pair read (4,076 / 1,725)."""
    train_file, test_file = (
        mrpc_like(tmp_path / "msr_paraphrase_train.txt", 4076, 0),
        mrpc_like(tmp_path / "msr_paraphrase_test.txt", 1725, 1),
    )
    out = tmp_path / "mrpc"
    argv = file_args(tiny_model_dir, out, "--train-file", str(train_file), "--test-file", str(test_file),
                     "--text-column", "#1 String", "--text-pair-column", "#2 String", "--label-column", "Quality",
                     "--max-steps", "2", "--eval-every", "0")  # fmt: skip
    assert train.main(argv) == 0
    assert "--task classification (inferred from" in capsys.readouterr().err
    metrics = metrics_of(out)
    assert metrics["task_kind"] == "classification" and metrics["text_pairs"] and metrics["label_names"] == ["0", "1"]
    assert metrics["train_examples"] + metrics["validation_examples"] == 4076 and metrics["test_examples"] == 1725
    # --task classification makes a .txt a table too, comma-separated here, its columns found by their names
    texts, labels = sentiment_rows(100, 0)
    commas = tmp_path / "reviews.txt"
    commas.write_text("sentence,label\n" + "".join(f"{t},{y}\n" for t, y in zip(texts, labels, strict=True)))
    argv = file_args(tiny_model_dir, tmp_path / "cls", "--train-file", str(commas), "--task", "classification",
                     "--max-steps", "1", "--eval-every", "0")  # fmt: skip
    assert train.main(argv) == 0
    metrics = metrics_of(tmp_path / "cls")
    assert metrics["label_names"] == ["0", "1"] and metrics["train_examples"] + metrics["validation_examples"] == 100


def test_wikitext_file_names_are_text(files, tiny_model_dir, tmp_path):
    """wiki.train.raw (WikiText-2-raw) and wiki.test.tokens (the tokenised variant): one text per line."""
    raw, tokens = tmp_path / "wiki.train.raw", tmp_path / "wiki.test.tokens"
    raw.write_bytes(files["notes.txt"].read_bytes())
    tokens.write_bytes(files["notes-test.txt"].read_bytes())
    out = tmp_path / "wiki"
    argv = file_args(tiny_model_dir, out, "--task", "mlm", "--train-file", str(raw), "--test-file", str(tokens),
                     "--max-steps", "2", "--eval-every", "0")  # fmt: skip
    assert train.main(argv) == 0
    metrics = metrics_of(out)
    assert metrics["task_kind"] == "mlm" and "test_perplexity" in metrics
    i = argv.index("--task")
    assert train.main(argv[:i] + argv[i + 2 :] + ["--output-dir", str(tmp_path / "inferred")]) == 0  # inferred
    assert metrics_of(tmp_path / "inferred")["task_kind"] == "mlm"


def test_flags_that_cannot_apply_are_one_line(files, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "out"
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(files["notes.txt"]),
                                                "--task", "mlm", "--label-column", "label"),
                  "--label-column: masked LM reads one text column and no labels")  # fmt: skip
    fails_cleanly(capsys, train.main, file_args(tiny_model_dir, out, "--train-file", str(files["notes.txt"]),
                                                "--task", "classification"),
                  "read as a table (its columns are named, or the task has labels), but its first line")  # fmt: skip
    assert not out.exists() or not any(out.iterdir())
