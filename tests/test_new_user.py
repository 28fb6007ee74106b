"""What a new user trips on (issue 31), each case as the user met it: `T` is a 2-step LoRA run of a tiny
DistilBERT on a 30-row CSV of text,label (pos/neg). Every case is one line and a non-zero exit, or a
right result, never a silent wrong one or a traceback."""

import ast
import csv
import fcntl
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import data
import evaluate
import methods
import minibert
import predict
import train
from minibert.errors import LoadError
from tests.conftest import sentiment_rows
from tests.test_loading import ROOT
from tests.test_train import fails_cleanly, refused_by_argparse
from training.folder import LOCK, RunFolder


def t_csv(path: Path, header=("text", "label")) -> Path:
    texts, labels = sentiment_rows(30, 0)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([text, "pos" if y else "neg"] for text, y in zip(texts, labels, strict=True))
    return path


def T(model, table: Path, out: Path, *extra) -> list[str]:
    return ["--method", "lora", "--model", str(model), "--train-file", str(table), "--test-file", str(table),
            "--max-steps", "2", "--eval-every", "0", "--save-every", "0", "--batch-size", "8", "--max-seq-len", "32",
            "--output-dir", str(out), "--cache-dir", str(out.parent / "cache"), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def run(tiny_distilbert_model_dir, tmp_path_factory):
    """T with a checkpoint at each step: a finished run to use and to resume."""
    root = tmp_path_factory.mktemp("new-user")
    table, out = t_csv(root / "t.csv"), root / "run"
    assert train.main(T(tiny_distilbert_model_dir, table, out, "--save-every", "1")) == 0
    return {"model": tiny_distilbert_model_dir, "table": table, "out": out}


# -- silent wrong results --


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--alpha", "64"], "alpha=16.0"),
        (["--dropout", "0.3"], "dropout=0.1"),
        (["--target-modules", "q_lin,k_lin"], "target_modules=None"),  # item 12: was a SafetensorError
        (["--lr", "1e-3"], "lr=0.0003"),
        (["--max-seq-len", "16"], "max_seq_len=32"),
    ],
)
def test_resume_refuses_what_changes_the_checkpoints_meaning(run, capsys, flags, named):
    """Item 1 (and 12): only the run's length and cadence may change on --resume."""
    argv = T(run["model"], run["table"], run["out"], "--resume", "--max-steps", "4", *flags)
    err = fails_cleanly(capsys, train.main, argv, f"was made with {named}, this command has")
    error = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and named in error[0]


def test_resume_accepts_a_longer_run_with_another_cadence(run, tmp_path, capsys):
    out = tmp_path / "longer"
    assert train.main(T(run["model"], run["table"], out, "--save-every", "1")) == 0
    (out / "metrics.json").unlink()
    argv = T(run["model"], run["table"], out, "--resume", "--max-steps", "4", "--eval-every", "2", "--log-every", "1")
    assert train.main(argv) == 0
    assert "resumed from step 2" in capsys.readouterr().err


def test_a_run_folder_in_use_is_refused_and_a_stale_lock_is_not(run, tmp_path, capsys):
    """Item 2: the second of two trainings into one folder stops, naming the first; a lock left by a killed
    process (its file, no holder) does not block --resume."""
    out = tmp_path / "busy"
    with RunFolder(out):  # another training holds the folder
        fails_cleanly(capsys, train.main, T(run["model"], run["table"], out),
                      f"--output-dir {out} is in use by another training (process {os.getpid()})")  # fmt: skip
    assert not out.exists()  # the first one made it and wrote nothing: gone with its lock

    stale = tmp_path / "stale"
    assert train.main(T(run["model"], run["table"], stale, "--save-every", "1")) == 0
    assert not (stale / LOCK).exists()  # a finished run leaves no lock file
    (stale / "metrics.json").unlink()
    (stale / LOCK).write_text("999999\n")  # as a SIGKILL leaves it: the file, and no process holding it
    assert train.main(T(run["model"], run["table"], stale, "--resume", "--max-steps", "3")) == 0


def test_the_lock_is_the_operating_systems(tmp_path):
    """Two descriptors of one lock file cannot both hold it, even in one process: that is what the lock rests on."""
    with RunFolder(tmp_path / "held"):
        fd = os.open(tmp_path / "held" / LOCK, os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


def test_a_text_column_that_is_the_label_is_refused(run, tmp_path, capsys):
    """Item 3."""
    fails_cleanly(capsys, train.main, T(run["model"], run["table"], tmp_path / "o", "--text-column", "label"),
                  "--text-column 'label' is also the label column")  # fmt: skip
    assert not (tmp_path / "o").exists()  # item 20: a failed run leaves no empty folder


def test_a_pair_column_that_is_the_text_column_is_refused(run, tmp_path, capsys):
    """(text, text) is no pair: refused in one line, as a text column that is the label is."""
    fails_cleanly(capsys, train.main, T(run["model"], run["table"], tmp_path / "o", "--text-column", "text",
                                        "--text-pair-column", "text"),
                  "--text-pair-column 'text' is also the text column")  # fmt: skip
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--alpha", "0", "argument --alpha: must be greater than 0, got 0"),  # item 4
        ("--max-seq-len", "0", "argument --max-seq-len: must be at least 1, got 0"),  # item 5
        ("--lr", "nan", "argument --lr: 'nan': a number must be finite"),  # item 9
        ("--lr", "inf", "argument --lr: 'inf': a number must be finite"),
        ("--dropout", "1.5", "argument --dropout: must be at least 0 and below 1, got 1.5"),
        ("--warmup-steps", "-1", "argument --warmup-steps: must be 0 or more, got -1"),
    ],
)
def test_train_flags_out_of_range(run, tmp_path, capsys, flag, value, message):
    refused_by_argparse(capsys, train.main, T(run["model"], run["table"], tmp_path / "o", flag, value), message)
    assert not (tmp_path / "o").exists()


def test_a_diverging_run_without_a_checkpoint_says_so(run, tmp_path, capsys):
    """Item 9: it no longer points at a checkpoints/ folder that does not exist."""
    assert train.main(T(run["model"], run["table"], tmp_path / "o", "--lr", "1e30", "--max-steps", "20")) == 3
    err = capsys.readouterr().err
    assert "no checkpoint had been saved yet" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_a_json_lines_label_that_is_a_list(run, tmp_path, capsys):
    """Item 6."""
    rows = [{"text": "a happy cat", "label": ["pos"]}, {"text": "a sad dog", "label": ["neg"]}] * 10
    table = tmp_path / "t.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    said = "line 1 has the label ['pos'] in column 'label', a list; a label is one text, number or true/false"
    fails_cleanly(capsys, train.main, T(run["model"], table, tmp_path / "o"), said)


def test_empty_texts_are_not_scored(run, tmp_path, capsys):
    """Item 7: on the command line an error; in a file a row with no prediction and a note."""
    fails_cleanly(capsys, predict.main, [str(run["out"]), "", "   "], "TEXT 1 is empty; give a text to predict")
    table, out = tmp_path / "in.csv", tmp_path / "out.csv"
    table.write_text("id,text\n1,happy cat\n2,   \n3,sad dog\n", encoding="utf-8")
    assert predict.main([str(run["out"]), "--file", str(table), "--output", str(out)]) == 0
    with out.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [row["note"] for row in rows] == ["", "empty text: not scored", ""]
    assert rows[1]["prediction"] == "" and rows[0]["prediction"] in ("pos", "neg")
    assert rows[0]["probability_pos"] and rows[1]["probability_pos"] == ""


# -- tracebacks --


@pytest.mark.parametrize("device", ["cuda", "foo"])
def test_a_device_this_torch_lacks_is_one_line(run, tmp_path, capsys, device):
    """Item 8, in train.py, predict.py and evaluate.py alike (this machine has no GPU)."""
    if device == "cuda" and __import__("torch").cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    said = "not a device name" if device == "foo" else "this torch is a CPU-only build"
    line = f"--device {device}: {said}"
    fails_cleanly(capsys, train.main, T(run["model"], run["table"], tmp_path / "o", "--device", device), line)
    fails_cleanly(capsys, predict.main, [str(run["out"]), "good", "--device", device], line)
    fails_cleanly(capsys, evaluate.main, [str(run["out"]), "--device", device, "--output-dir", str(tmp_path / "r")],
                  line)  # fmt: skip


@pytest.mark.parametrize("value", ["0", "-1"])
def test_batch_sizes_of_predict_and_evaluate(run, tmp_path, capsys, value):
    """Item 10."""
    message = f"argument --batch-size: must be at least 1, got {value}"
    refused_by_argparse(capsys, predict.main, [str(run["out"]), "good", "--batch-size", value], message)
    refused_by_argparse(capsys, evaluate.main, [str(run["out"]), "--batch-size", value], message)


def test_evaluate_checks_its_output_dir_first(run, tmp_path, capsys):
    """Item 11: a file, or a folder that cannot be made, is exit 2 before any evaluation (1 is 'a run skipped')."""
    a_file = tmp_path / "results"
    a_file.write_text("mine\n")
    err = fails_cleanly(capsys, evaluate.main, [str(run["out"]), "--output-dir", str(a_file)],
                        f"--output-dir {a_file}: a file, not a folder; choose another")  # fmt: skip
    assert "evaluating" not in err and a_file.read_text() == "mine\n"
    fails_cleanly(capsys, evaluate.main, [str(run["out"]), "--output-dir", str(a_file / "inside")],
                  "cannot write there")  # fmt: skip


# -- misleading messages --


@pytest.mark.filterwarnings("ignore:.*initialised with")
def test_an_adapter_on_another_base_model(run, tiny_model_dir, tmp_path, capsys):
    """Item 13: said as what it is, by the library and by a run whose base model changed."""
    bert = minibert.from_pretrained(str(tiny_model_dir), num_labels=2)
    with pytest.raises(methods.AdapterError, match="this adapter was trained on a distilbert model, hidden size 32"):
        methods.load_adapter(bert, run["out"])
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (moved / name).write_bytes((run["out"] / name).read_bytes())
    metrics = json.loads((run["out"] / "metrics.json").read_text())
    (moved / "metrics.json").write_text(json.dumps({**metrics, "base_model": str(tiny_model_dir)}))
    fails_cleanly(capsys, predict.main, [str(moved), "good"],
                  "was trained on a distilbert model with 2 layers and hidden size 32")  # fmt: skip


def test_a_relative_model_path_is_stored_absolute(run, tmp_path, monkeypatch):
    """Item 14: the run is found again from any folder."""
    monkeypatch.chdir(run["model"].parent)
    out = tmp_path / "relative"
    assert train.main(T(Path(run["model"].name), run["table"], out)) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["base_model"] == str(run["model"].resolve())
    assert "a local folder" in (out / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    assert predict.main([str(out), "happy cat"]) == 0


def test_texts_and_flags_in_any_order(run, capsys):
    """Item 15."""
    assert predict.main([str(run["out"]), "--device", "cpu", "great movie", "--batch-size", "2"]) == 0
    assert "great movie" in capsys.readouterr().out


def test_a_long_csv_field_is_read(tmp_path):
    """Item 16: a 5 MB review is a field, not a quoting error."""
    long = "happy " * 900_000
    path = tmp_path / "long.csv"
    path.write_text(f'text,label\n"{long}",pos\nsad,neg\n', encoding="utf-8")
    assert data.read_table(path).columns["text"][0] == long


def test_a_repeated_header_name_is_said(tmp_path):
    """Item 17."""
    path = tmp_path / "twice.csv"
    path.write_text("text,text,label\na,b,pos\n", encoding="utf-8")
    with pytest.raises(data.DataError, match="the header names column 'text' 2 times"):
        data.read_table(path)


def test_a_missing_local_path_fails_at_once(tmp_path, monkeypatch):
    """Item 18: 'models/doesnotexist' when models/ is a folder here is a path, never sent to the hub."""
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(minibert.hub, "hf_hub_download", no_hub)
    with pytest.raises(LoadError, match=r"models/ is a folder here, with no doesnotexist in it"):
        minibert.from_pretrained("models/doesnotexist")


def test_no_warning_about_a_head_that_the_run_loads(run, tmp_path, capsys):
    """Item 19: the trained head is loaded right after the base model, so nothing is said of a random one."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert predict.main([str(run["out"]), "happy cat"]) == 0
    assert not [w for w in caught if "initialised with" in str(w.message)]
    assert train.main(T(run["model"], run["table"], tmp_path / "o")) == 0
    err = capsys.readouterr().err  # train.py: the new head, said as one plain line
    assert "note: " in err and "has no pre_classifier or classifier" in err and "UserWarning" not in err


# -- also --


def test_a_failed_run_leaves_no_empty_folder(run, tmp_path, capsys):
    """Item 20: a mistake found after the folder was made (the model takes at most 64 tokens)."""
    out = tmp_path / "runs" / "x"
    fails_cleanly(capsys, train.main, T(run["model"], run["table"], out, "--max-seq-len", "65"), "--max-seq-len 65")
    assert not out.exists()


def test_the_usual_column_names_are_guessed_and_said(run, tmp_path, capsys):
    """Item 21: the IMDB file everyone downloads has review,sentiment."""
    table = t_csv(tmp_path / "imdb.csv", header=("review", "sentiment"))
    assert train.main(T(run["model"], table, tmp_path / "o")) == 0
    assert "columns: text 'review', label 'sentiment'" in capsys.readouterr().err


def test_a_replaced_output_is_said(run, tmp_path, capsys):
    """Item 22: the rule of every script: a file is replaced with a line saying so; a folder is never replaced."""
    out = tmp_path / "p.jsonl"
    out.write_text("old\n")
    table = tmp_path / "in.txt"
    table.write_text("happy cat\n", encoding="utf-8")
    assert predict.main([str(run["out"]), "--file", str(table), "--output", str(out)]) == 0
    assert "(it replaced the file there)" in capsys.readouterr().err and "old" not in out.read_text()


def test_training_report_does_not_import_tasks():
    """Item 23: training/ sits below tasks/ in the house; report.py gets the task's kind from the task."""
    tree = ast.parse((ROOT / "training" / "report.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(name == "tasks" or name.startswith("tasks.") for name in imported)


def test_without_posix_modules_every_script_imports_and_a_run_finishes(run, tmp_path):
    """Windows has neither `resource` nor `fcntl`: the scripts import, a run trains without the folder lock,
    and its peak memory is said to be not measured rather than guessed."""
    out = tmp_path / "o"
    code = ("import sys; sys.modules['resource'] = None; sys.modules['fcntl'] = None\n"
            "import evaluate, predict, merge, analyze, train\n"
            f"sys.exit(train.main({T(run['model'], run['table'], out)!r}))\n")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["peak_memory_mb"] is None and metrics["peak_memory_kind"] == "not_measured"
    assert "| Memory | not measured |" in (out / "README.md").read_text()


# The torch features the product uses that set its floor, with the release that brought each.
TORCH_FLOOR = {"AdamW(fused=True) on the CPU": (2, 4), "init_process_group(device_id=...)": (2, 3)}


def test_requirements_name_the_torch_the_code_needs():
    """requirements.txt's torch floor is the newest release a feature the code uses needs, and that
    feature is still used (train.py's fused AdamW): a user on an older torch is told at install time."""
    floor = re.search(r"^torch>=(\d+)\.(\d+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE)
    assert floor and tuple(map(int, floor.groups())) == max(TORCH_FLOOR.values())
    assert "AdamW(" in (ROOT / "train.py").read_text() and "fused=True" in (ROOT / "train.py").read_text()
