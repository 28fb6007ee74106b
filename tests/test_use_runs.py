"""Using trained runs: predict.py over whole files (every input format, standard input, the input's order and
columns kept, the same answers as for one text), results over seeds in evaluate.py (mean and sample standard
deviation by hand, n), the default output directory of a seed, and the training curves."""

import csv
import io
import json
import math
import statistics

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evaluate
import predict
import train
from tests.conftest import sentiment_rows
from tests.test_train import fails_cleanly
from tests.test_train_classification import clf_args


@pytest.fixture(scope="module")
def seeds(tiny_rich_model_dir, sentiment, tmp_path_factory):
    """LoRA and HiRA on the tiny SST-2 set, two seeds each."""
    root = tmp_path_factory.mktemp("seeds")
    for method, lr in (("lora", "5e-3"), ("hira", "5e-2")):
        for seed in (0, 1):
            out = root / f"{method}-{seed}"
            args = clf_args(tiny_rich_model_dir, sentiment["sst2"], out, "--method", method, "--lr", lr,
                            "--seed", str(seed), "--max-steps", "30")  # fmt: skip
            assert train.main(args) == 0
    return root


TEXTS, _ = sentiment_rows(40, 7)


def inputs(tmp_path) -> dict:
    """The same 40 texts (plus an id column) in every input format predict.py reads."""
    rows = [{"id": f"r{i}", "sentence": text} for i, text in enumerate(TEXTS)]
    paths = {}
    paths["txt"] = tmp_path / "in.txt"
    paths["txt"].write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    paths["csv"] = tmp_path / "in.csv"
    with paths["csv"].open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["id", "sentence"])
        writer.writeheader()
        writer.writerows(rows)
    paths["tsv"] = tmp_path / "in.tsv"
    paths["tsv"].write_text("id\tsentence\n" + "".join(f"{r['id']}\t{r['sentence']}\n" for r in rows), "utf-8")
    paths["jsonl"] = tmp_path / "in.jsonl"
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    paths["parquet"] = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [r["id"] for r in rows], "sentence": TEXTS}), paths["parquet"])
    return paths


def read_output(path):
    if path.suffix == ".csv":
        return list(csv.DictReader(path.open(encoding="utf-8")))
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["txt", "csv", "tsv", "jsonl", "parquet"])
@pytest.mark.parametrize("out_ext", [".csv", ".jsonl"])
def test_predict_a_file_keeps_order_columns_and_answers(seeds, tmp_path, capsys, fmt, out_ext):
    run = seeds / "lora-0"
    path = inputs(tmp_path)[fmt]
    out = tmp_path / f"predictions{out_ext}"
    assert predict.main([str(run), "--file", str(path), "--output", str(out), "--batch-size", "7"]) == 0
    rows = read_output(out)
    assert len(rows) == len(TEXTS)
    texts = [row["text" if fmt == "txt" else "sentence"] for row in rows]
    assert texts == TEXTS  # the input's order, though batched by length inside
    if fmt != "txt":
        assert [row["id"] for row in rows] == [f"r{i}" for i in range(len(TEXTS))]  # the input's columns first
        assert list(rows[0])[:2] == ["id", "sentence"]
    assert list(rows[0])[-4:] == ["prediction", "probability", "probability_negative", "probability_positive"]
    capsys.readouterr()
    assert predict.main([str(run), *TEXTS[:5]]) == 0  # the command line's answers: the same
    for line, row in zip(capsys.readouterr().out.splitlines(), rows[:5], strict=True):
        p = float(row["probability_positive"])
        assert line.split()[0] == row["prediction"] and f"positive {p:.3f}" in line
        assert math.isclose(float(row["probability"]), max(p, 1 - p), rel_tol=1e-6)


def test_predict_reads_standard_input_and_writes_json_lines_to_stdout(seeds, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("the cat was happy .\n\nthe dog was sad .\n"))
    assert predict.main([str(seeds / "lora-0"), "--file", "-"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["text"] for row in rows] == ["the cat was happy .", "the dog was sad ."]  # blank lines: not texts


def test_predict_bad_input_writes_nothing(seeds, tmp_path, capsys):
    run, out = str(seeds / "lora-0"), tmp_path / "out.csv"
    table = tmp_path / "t.csv"
    table.write_text("id,body\n1,the cat\n", encoding="utf-8")
    fails_cleanly(capsys, predict.main, [run, "--file", str(table), "--output", str(out)], "no column 'sentence'")
    fails_cleanly(capsys, predict.main, [run, "--file", str(tmp_path / "none.csv"), "--output", str(out)],
                  "no such file")  # fmt: skip
    fails_cleanly(capsys, predict.main, [run, "--file", str(table), "--output", str(tmp_path / "o.xlsx")],
                  "write predictions to a .csv or .jsonl file")  # fmt: skip
    assert not out.exists()
    assert predict.main([run, "--file", str(table), "--text-column", "body", "--output", str(out)]) == 0
    assert [row["body"] for row in read_output(out)] == ["the cat"]


def test_two_seeds_are_one_group_with_mean_and_std(seeds, sentiment, tmp_path):
    results = tmp_path / "results"
    runs = [str(seeds / name) for name in ("lora-0", "lora-1", "hira-0", "hira-1")]
    argv = [*runs, "--data-dir", str(sentiment["sst2"]), "--output-dir", str(results),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert evaluate.main(argv) == 0
    table = list(csv.DictReader((results / "comparison-sst2.csv").open()))
    assert [row["method"] for row in table] == ["lora", "hira"] and [row["n"] for row in table] == ["2", "2"]
    spreads = 0
    for row, method in zip(table, ("lora", "hira"), strict=True):
        accuracies = [
            json.loads((seeds / f"{method}-{s}" / "metrics.json").read_text())["test_accuracy"] for s in (0, 1)
        ]
        assert float(row["test_accuracy"]) == pytest.approx(sum(accuracies) / 2)  # re-scored: the same models
        if accuracies[0] != accuracies[1]:
            by_hand = abs(accuracies[0] - accuracies[1]) / math.sqrt(2)  # the sample std of two values
            assert float(row["test_accuracy_std"]) == pytest.approx(by_hand)
            assert float(row["test_accuracy_std"]) == pytest.approx(statistics.stdev(accuracies))
            spreads += 1
    assert spreads >= 1  # the seeds differ somewhere, so a standard deviation was checked
    md = (results / "comparison-sst2.md").read_text()
    assert " ± " in md and md.splitlines()[2].rstrip().endswith("| n |")
    assert (results / "curves-sst2.png").stat().st_size > 10_000  # the training curves, drawn


def test_the_default_output_dir_names_the_seed(tiny_rich_model_dir, sentiment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = clf_args(tiny_rich_model_dir, sentiment["sst2"], tmp_path / "x", "--method", "lora", "--max-steps", "2")
    args = args[: args.index("--output-dir")] + args[args.index("--output-dir") + 2 :]
    assert train.main([*args, "--seed", "3"]) == 0 and train.main(args) == 0
    model = tiny_rich_model_dir.name
    assert (tmp_path / f"runs/lora-sst2-{model}-seed3/metrics.json").is_file()
    assert (tmp_path / f"runs/lora-sst2-{model}/metrics.json").is_file()  # seed 0: the name it always had
