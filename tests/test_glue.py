"""GLUE by name (data/glue.py): the hub's nyu-mll/glue layout, the split policy (official validation as
test, MNLI's two), the official metrics under their names in metrics.json, the first one picking the best
checkpoint, and the download path against a loopback hub."""

import csv
import json

import pytest

import data
import evaluate
import train
from tests.test_loading import run_against_hub


def test_split_policy_and_labels(glue_dir):
    rte = data.load_labelled(data.DATASETS["rte"], str(glue_dir))
    assert len(rte["validation"]) == 60 and len(rte["train"]) == 540  # 10% of the training file held out
    assert rte["test"].source.endswith("rte/validation-00000-of-00001.parquet")  # GLUE's test labels are hidden
    assert rte["test"].pairs is not None and set(rte["test"].labels.tolist()) == {0, 1}
    mnli = data.load_labelled(data.DATASETS["mnli"], str(glue_dir), splits=("test", "test_mismatched"))
    assert mnli["test"].source.endswith("validation_matched-00000-of-00001.parquet")
    assert mnli["test_mismatched"].source.endswith("validation_mismatched-00000-of-00001.parquet")
    stsb = data.load_labelled(data.DATASETS["stsb"], str(glue_dir), splits=("test",))
    assert stsb["test"].labels.dtype.kind == "f" and stsb["test"].labels.max() > 4


def glue_args(model_dir, glue_dir, out_dir, task, *extra):
    return ["--task", task, "--method", "lora", "--model", str(model_dir), "--data-dir", str(glue_dir),
            "--output-dir", str(out_dir), "--batch-size", "16", "--lr", "5e-3", "--warmup-steps", "5",
            "--max-steps", "40", "--eval-every", "10", "--max-seq-len", "32", "--log-every", "5",
            "--target-modules", "query,key,value,dense",
            "--cache-dir", str(out_dir.parent / "cache"), *extra]  # fmt: skip


@pytest.mark.parametrize(
    "task, names",
    [
        ("cola", ["matthews_correlation"]),
        ("stsb", ["pearson", "spearman"]),
        ("mnli", ["accuracy"]),
    ],
)
def test_official_metrics_in_metrics_json(tiny_model_dir, tiny_rich_model_dir, glue_dir, tmp_path, task, names):
    out = tmp_path / task
    # A score must come through the random pooler's tanh at its scale, which the rich model's weights (std 0.2)
    # saturate: measured there Pearson ~0 after 200 steps. On the plain tiny BERT, with the adapters' dropout
    # off, seeds 0, 2 and 3 reach 0.94 and seed 1 0.48 (with it on, 0.1-0.9 as the draws fall)
    model, extra = (tiny_model_dir, ["--max-steps", "200", "--epochs", "10", "--eval-every", "50", "--dropout", "0"]) \
        if task == "stsb" \
        else (tiny_rich_model_dir, ["--max-steps", "80"] if task == "mnli" else [])  # fmt: skip
    assert train.main(glue_args(model, glue_dir, out, task, *extra)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    splits = ["test", "test_mismatched"] if task == "mnli" else ["test"]
    assert metrics["metric_names"] == names and metrics["test_splits"] == splits
    for split in splits:
        for name in names:
            assert isinstance(metrics[f"{split}_{name}"], float)
    assert f"validation_{names[0]}" in metrics
    # the best checkpoint is the one with the highest validation value of the first official metric
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    validations = [line for line in log if line["split"] == "validation"]
    best = max(validations, key=lambda line: line[names[0]])
    assert metrics["best_step"] == best["step"] and metrics[f"validation_{names[0]}"] == best[names[0]]
    if task == "mnli":  # three classes, learnt: the pair's relation is in the two texts together
        assert metrics["label_names"] == ["entailment", "neutral", "contradiction"] and metrics["text_pairs"]
        assert metrics["test_accuracy"] > 0.5 and metrics["test_mismatched_examples"] == 120
        argv = [str(out), "--data-dir", str(glue_dir), "--output-dir", str(tmp_path / "results"),
                "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        assert evaluate.main(argv) == 0
        row = next(csv.DictReader((tmp_path / "results" / "comparison-mnli.csv").open()))
        assert float(row["test_mismatched_accuracy"]) == pytest.approx(metrics["test_mismatched_accuracy"])
        assert float(row["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
    if task == "stsb":
        assert metrics["task_kind"] == "regression" and metrics["test_pearson"] > 0.7
    card = (out / "README.md").read_text()
    assert f"{metrics[f'test_{names[0]}']:.4f}" in card


def test_glue_tsv_files_point_to_train_file(tmp_path):
    """GLUE's own RTE/train.tsv + dev.tsv in --data-dir: the error says how to train on them."""
    (tmp_path / "train.tsv").write_text("sentence1\tsentence2\tlabel\na\tb\tentailment\n", encoding="utf-8")
    (tmp_path / "dev.tsv").write_text("sentence1\tsentence2\tlabel\na\tb\tentailment\n", encoding="utf-8")
    with pytest.raises(
        data.DataError,
        match=r"no rte file train-00000-of-00001.parquet.*It has dev.tsv, train.tsv: "
        r"your own files go in with --train-file",
    ):
        data.load_labelled(data.DATASETS["rte"], str(tmp_path))


def test_download_from_the_hub(glue_dir, tmp_path):
    """nyu-mll/glue's rte files, served as the hub serves them, on loopback; the hidden test file is never fetched."""
    code = "import data; s = data.load_labelled(data.DATASETS['rte']); print(len(s['test']), len(s['train']))"
    out, log = run_against_hub({"datasets/nyu-mll/glue": glue_dir}, code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["120", "540"]
    assert any("rte/train-00000" in path for _, _, path in log)
    assert not any("rte/test-00000" in path for _, _, path in log)
