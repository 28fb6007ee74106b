"""train.py, evaluate.py and predict.py on the classification tasks: a tiny random BERT and a tiny
labelled set in SST-2's and IMDB's layouts (tests/conftest.py)."""

import io
import json
import re

import pytest

import evaluate
import predict
import train
from tests.test_train import fails_cleanly, run_cli
from training.progress import Progress

METHODS = ["head", "lora", "sparse_lora", "hira", "qlora"]


def clf_args(model_dir, data_dir, out_dir, *extra, task="sst2"):
    return [
        "--task", task, "--model", str(model_dir), "--data-dir", str(data_dir), "--output-dir", str(out_dir),
        "--batch-size", "16", "--lr", "5e-3", "--warmup-steps", "5", "--log-every", "5", "--max-steps", "60",
        "--eval-every", "30", "--max-seq-len", "24", "--target-modules", "query,key,value,dense",
        "--cache-dir", str(out_dir.parent / "cache"), *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def runs(tiny_rich_model_dir, sentiment, tmp_path_factory):
    """One short SST-2 run per method, trained once for the tests below."""
    root = tmp_path_factory.mktemp("runs")
    for method in METHODS:
        lr = {"head": "1e-1", "hira": "5e-2"}.get(method, "5e-3")  # HiRA's update scales with W0: a larger lr
        args = clf_args(tiny_rich_model_dir, sentiment["sst2"], root / method, "--method", method, "--lr", lr)
        if method == "sparse_lora":  # λ is in loss-gradient units; this tiny model's gate gradients are small
            args += ["--sparse-lambda", "1e-4"]
        assert train.main(args) == 0
    return root


@pytest.mark.parametrize("method", METHODS)
def test_every_method_learns(runs, method):
    out = runs / method
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "sst2" and metrics["steps"] == 60 and metrics["finished"]
    # chance is 0.5 ("happy" vs "sad", balanced). A linear probe of a frozen random encoder (head) learns
    # far less than an adapted encoder, as on real models: 0.64 measured, 5 standard errors above chance.
    assert metrics["test_accuracy"] > (0.6 if method == "head" else 0.95), metrics["test_accuracy"]
    for key in (
        "test_f1",
        "test_macro_f1",
        "test_loss",
        "validation_accuracy",
        "padding_fraction",
        "train_examples",
        "validation_examples",
        "test_examples",
        "train_tokens_per_s",
        "peak_memory_mb",
    ):
        assert key in metrics, key  # fmt: skip
    assert metrics["validation_examples"] == 872 and metrics["test_examples"] == 300
    assert metrics["train_examples"] == 1400 - 872 and metrics["train_truncated"] > 0  # some exceed 24 tokens
    assert 0 < metrics["padding_fraction"] < 0.5
    files = {p.name for p in out.iterdir()}
    assert ("head_model.safetensors" in files) == (method == "head")
    assert ("adapter_model.safetensors" in files) == (method != "head")
    card = (out / "README.md").read_text()
    assert (
        "N/A" not in card and f"{metrics['test_accuracy']:.4f}" in card and "metrics: [accuracy, f1, macro_f1]" in card
    )
    if method != "head":
        assert 'model = PeftModel.from_pretrained(base_model, "path/to/this/directory")' in card
        assert "num_labels=2" in card


def test_head_trains_only_the_head(runs):
    head = json.loads((runs / "head" / "metrics.json").read_text())
    lora = json.loads((runs / "lora" / "metrics.json").read_text())
    # the tiny BERT has a hidden size of 32: the classifier is 32 * 2 + 2 parameters
    assert head["trainable_params"] == 66 and head["modules_to_save"] == ["classifier"]
    assert lora["trainable_params"] > head["trainable_params"] and lora["total_params"] > head["total_params"]


def test_evaluate_one_table_per_task_head_first(runs, tiny_model_dir, sentiment, corpus, tmp_path):
    mlm = tmp_path / "mlm"
    argv = ["--method", "lora", "--model", str(tiny_model_dir), "--data-dir", str(corpus["text"]),
            "--output-dir", str(mlm), "--max-steps", "10", "--eval-every", "0", "--max-seq-len", "32",
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert train.main(argv) == 0
    results = tmp_path / "results"
    for data_dir, run_dirs in ((sentiment["sst2"], [runs / m for m in ("lora", "head")]), (corpus["text"], [mlm])):
        argv = [*map(str, run_dirs), "--data-dir", str(data_dir), "--output-dir", str(results),
                "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
        assert evaluate.main(argv) == 0
    rows = (results / "comparison-sst2.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert [row.split(",")[0] for row in rows[1:]] == ["head", "lora"]  # the baseline first
    assert {"test_accuracy", "test_f1", "test_macro_f1"} <= set(header)
    lora = json.loads((runs / "lora" / "metrics.json").read_text())
    measured = dict(zip(header, rows[2].split(","), strict=True))
    assert float(measured["test_accuracy"]) == pytest.approx(lora["test_accuracy"])  # the same model, re-scored
    assert (results / "comparison-sst2.png").stat().st_size > 10_000
    assert (results / "comparison-wikitext2.md").read_text().splitlines()[4].startswith("| base |")


def test_predict(runs, tiny_model_dir, corpus, tmp_path, capsys):
    assert predict.main([str(runs / "lora"), "the cat was happy .", "the dog was sad ."]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"\s*positive  \(negative 0\.\d{3}, positive 0\.\d{3}\)  the cat was happy \.", lines[0])
    assert re.match(r"\s*negative  \(negative 0\.\d{3}, positive 0\.\d{3}\)  the dog was sad \.", lines[1])
    fails_cleanly(capsys, predict.main, [str(tmp_path / "nope"), "text"], "nope: no such run directory")
    fails_cleanly(capsys, predict.main, [str(tmp_path), "text"], "not a finished run (no metrics.json)")
    mlm = tmp_path / "mlm"
    argv = ["--method", "lora", "--model", str(tiny_model_dir), "--data-dir", str(corpus["text"]),
            "--output-dir", str(mlm), "--max-steps", "5", "--eval-every", "0", "--max-seq-len", "32"]  # fmt: skip
    assert train.main(argv) == 0
    capsys.readouterr()
    fails_cleanly(capsys, predict.main, [str(mlm), "no mask here"], "TEXT 1: a masked-LM run fills [MASK] tokens")
    assert predict.main([str(mlm), "the cat sat on the [MASK] ."]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "the cat sat on the [MASK] ." and re.match(
        r"  \[MASK\] 1: (\S+ 0\.\d{3}, ){4}\S+ 0\.\d{3}$", out[1]
    )
    fails_cleanly(capsys, predict.main, [str(runs / "lora")], "give TEXTs to predict, or --file PATH")


def test_bad_input(tiny_model_dir, sentiment, corpus, tmp_path, capsys):
    base = clf_args(tiny_model_dir, sentiment["sst2"], tmp_path / "out", "--method", "lora")
    with pytest.raises(SystemExit) as unknown:
        train.main([*base, "--task", "glue"])
    assert unknown.value.code == 2 and "invalid choice: 'glue'" in capsys.readouterr().err
    fails_cleanly(capsys, train.main, [*base, "--task", "mnli"], "no mnli file train-00000-of-00001.parquet")
    fails_cleanly(capsys, train.main, [*base, "--task", "imdb"], "no imdb file train-00000-of-00001.parquet")
    fails_cleanly(capsys, train.main, [*base, "--data-dir", str(corpus["text"])], "no sst2 file")
    fails_cleanly(capsys, train.main, [*base, "--task", "wikitext2", "--method", "head"],
                  "--method head trains a classification head")  # fmt: skip
    bad = tmp_path / "bad"
    bad.mkdir()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sentence": ["fine"] * 1000, "label": [0, 1, 2, 1] * 250}),
                   bad / "train-00000-of-00001.parquet")  # fmt: skip
    fails_cleanly(capsys, train.main, [*base, "--data-dir", str(bad)], "row 3 has label 2, outside the sst2 classes")
    assert not (tmp_path / "out").exists()  # nothing written for a run that could not start, not even its folder


def test_imdb_layout_trains(tiny_model_dir, sentiment, tmp_path):
    out = tmp_path / "imdb"
    args = clf_args(tiny_model_dir, sentiment["imdb"], out, "--method", "lora", "--max-steps", "4", task="imdb")
    assert train.main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["test_source"].endswith(
        "plain_text/test-00000-of-00001.parquet"
    )


def test_progress_is_plain_lines_when_not_a_terminal():
    stream = io.StringIO()  # not a TTY
    progress = Progress(total=5, initial=0, desc="x", every_s=0.0, stream=stream)
    for step in range(5):
        progress.update(loss=1.0 / (step + 1), lr=1e-4, tokens_per_s=1234.0)
    progress.write("step 5: validation ...")
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 6
    assert re.fullmatch(r"step 5/5 \(100%\)  loss 0\.2000  lr 1\.00e-04  tokens/s 1,234  ETA 0m00s", lines[4])
    quiet = io.StringIO()
    slow = Progress(total=100, initial=0, desc="x", every_s=3600.0, stream=quiet)
    for _ in range(99):
        slow.update(loss=1.0, lr=1e-4, tokens_per_s=1.0)
    assert quiet.getvalue() == ""  # nothing until 30 s (here an hour) have passed ...
    slow.update(loss=1.0, lr=1e-4, tokens_per_s=1.0)
    assert quiet.getvalue().startswith("step 100/100")  # ... or the last step


def test_a_run_under_nohup_logs_lines_not_bar_frames(tiny_model_dir, sentiment, tmp_path):
    args = clf_args(tiny_model_dir, sentiment["sst2"], tmp_path / "run", "--method", "lora", "--max-steps", "20")
    result = run_cli("train.py", *args)  # stderr is a pipe, not a terminal
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "step 20/20 (100%)" in result.stderr
    assert "step 20: validation loss" in result.stderr


def test_patience_stops_a_run_that_has_stopped_improving(tiny_model_dir, sentiment, tmp_path):
    """--patience 2 with validation every step at a rate too small to change a prediction: step 1 is the best,
    steps 2 and 3 do not beat it, so the run stops at step 3 of 60, tests step 1's checkpoint, and says so;
    with --patience-from 4 it stops only after two counted validations past step 4; without --patience the same
    run goes on."""
    out = tmp_path / "patient"
    flags = ["--method", "lora", "--lr", "1e-12", "--eval-every", "1", "--save-every", "0"]
    assert train.main([*clf_args(tiny_model_dir, sentiment["sst2"], out, *flags), "--patience", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["steps"], metrics["best_step"], metrics["stopped_early"]) == (3, 1, True)
    assert "stopped early (--patience 2)" in (out / "README.md").read_text()
    validations = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()
                   if json.loads(line)["split"] == "validation"]  # fmt: skip
    assert validations == [1, 2, 3]
    last = tmp_path / "last"  # patience runs out at the last step: the run ended, it did not stop early
    assert train.main([*clf_args(tiny_model_dir, sentiment["sst2"], last, *flags), "--patience", "2",
                       "--max-steps", "3"]) == 0  # fmt: skip
    assert json.loads((last / "metrics.json").read_text())["stopped_early"] is False
    later = tmp_path / "later"  # --patience-from 4: steps 1-4 are not counted, 5 and 6 are: it stops at 6
    assert train.main([*clf_args(tiny_model_dir, sentiment["sst2"], later, *flags), "--patience", "2",
                       "--patience-from", "4"]) == 0  # fmt: skip
    later_metrics = json.loads((later / "metrics.json").read_text())
    assert (later_metrics["steps"], later_metrics["best_step"], later_metrics["stopped_early"]) == (6, 1, True)
    goes_on = tmp_path / "impatient"
    assert train.main([*clf_args(tiny_model_dir, sentiment["sst2"], goes_on, *flags), "--max-steps", "5"]) == 0
    assert json.loads((goes_on / "metrics.json").read_text())["steps"] == 5
