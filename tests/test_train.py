"""train.py and evaluate.py end to end on a tiny random BERT and a synthetic WikiText-like corpus."""

import json
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import data
import evaluate
import methods
import minibert
import train
from tests.test_loading import ROOT

METRIC_FIELDS = {
    "method", "base_model", "trainable_params", "total_params", "trainable_percent", "model_size_mb", "steps",
    "train_time_s", "train_samples_per_s", "train_tokens_per_s", "peak_memory_mb", "peak_memory_kind",
    "validation_perplexity", "test_loss", "test_perplexity", "test_accuracy", "hyperparameters", "device",
    "exported_params", "exported_file_bytes",
}  # fmt: skip


def train_args(model_dir, corpus, out_dir, *extra):
    return [
        "--model", str(model_dir), "--data-dir", str(corpus["text"]), "--output-dir", str(out_dir),
        "--max-seq-len", "32", "--batch-size", "8", "--epochs", "20", "--lr", "5e-3", "--warmup-steps", "5",
        "--log-every", "5",
        "--target-modules", "query,key,value,dense", "--cache-dir", str(Path(out_dir).parent / "cache"), *extra,
    ]  # fmt: skip


def read_log(out_dir):
    return [json.loads(line) for line in (Path(out_dir) / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("method, peak", [("hira", 3e-3), ("lora", 3e-4), ("full", 2e-5)])
def test_default_learning_rate_per_method(method, peak, tiny_model_dir, corpus, tmp_path):
    """Without --lr, HiRA trains at methods.hira.DEFAULT_LR (its update is scaled by W0's small entries), full
    fine-tuning at methods.full.DEFAULT_LR (BERT's), every other method at 3e-4; the run records the rate it
    used, and AdamW stepped with it."""
    args = train_args(tiny_model_dir, corpus, tmp_path / method, "--method", method, "--max-steps", "2",
                      "--eval-every", "0", "--save-every", "0", "--log-every", "1")  # fmt: skip
    i = args.index("--lr")
    assert train.main(args[:i] + args[i + 2 :]) == 0
    metrics = json.loads((tmp_path / method / "metrics.json").read_text())
    assert metrics["hyperparameters"]["lr"] == peak
    steps = [row for row in read_log(tmp_path / method) if row["split"] == "train"]
    assert steps[-1]["lr"] == pytest.approx(peak * 2 / 5)  # step 1 of the 5 warm-up steps


def test_sparsifying_schedule_raises_xi_in_stages_and_traces_the_ranks(tiny_model_dir, corpus, tmp_path, capsys):
    """--sora-schedule 0.3,3 on a 30-step run under the paper's rule: ξ is 1e-3, then 0.1505, then 0.3, ten
    steps each (the authors' linear lambda schedule), and each validation line carries the ranks it was
    scored with, which fall as ξ rises."""
    assert methods.sora.Sparsify(0.3, 3, 30).xi(1e-3, 0) == 1e-3
    assert methods.sora.Sparsify(0.3, 3, 30).xi(1e-3, 10) == pytest.approx(0.1505)
    assert methods.sora.Sparsify(0.3, 3, 30).xi(1e-3, 29) == pytest.approx(0.3)
    out = tmp_path / "sparsify"
    args = train_args(tiny_model_dir, corpus, out, "--method", "sparse_lora", "--sora-rule", "paper", "--max-steps",
                      "30", "--eval-every", "10", "--log-every", "1", "--sparse-lambda", "1e-3", "--sora-schedule",
                      "0.3,3")  # fmt: skip
    assert train.main(args) == 0
    log = read_log(out)
    xis = {row["step"]: row["xi"] for row in log if row["split"] == "train"}
    assert xis[5] == 1e-3 and xis[15] == pytest.approx(0.1505) and xis[25] == pytest.approx(0.3)
    kept = [sum(row["ranks"]) for row in log if row["split"] == "validation"]
    assert len(kept) == 3 and kept[0] > kept[-1], kept
    with pytest.raises(SystemExit) as exit_:
        train.main([*args[:-1], "0.3"])
    assert exit_.value.code == 2 and "--sora-schedule: '0.3': write XI_MAX,STAGES" in capsys.readouterr().err


def test_a_run_shorter_than_its_warm_up(tiny_model_dir, corpus, tmp_path, capsys):
    """The default warm-up (100 steps) in a 20-step run becomes 6% of it, 2 steps, said in a note; a warm-up
    the user chose is kept, with a warning that the rate never reaches its peak."""
    args = train_args(tiny_model_dir, corpus, tmp_path / "default", "--method", "lora", "--max-steps", "20",
                      "--eval-every", "0", "--save-every", "0", "--log-every", "1")  # fmt: skip
    i = args.index("--warmup-steps")
    assert train.main(args[:i] + args[i + 2 :]) == 0
    assert "it warms up for its first 6%, 2 steps" in capsys.readouterr().err
    metrics = json.loads((tmp_path / "default" / "metrics.json").read_text())
    assert metrics["hyperparameters"]["warmup_steps"] == 2
    lrs = [row["lr"] for row in read_log(tmp_path / "default") if row["split"] == "train"]
    assert lrs[1] == pytest.approx(5e-3) and lrs[-1] < lrs[1]  # the peak at step 1 (of 0..19), then decay
    args = train_args(tiny_model_dir, corpus, tmp_path / "chosen", "--method", "lora", "--max-steps", "4",
                      "--eval-every", "0", "--save-every", "0")  # fmt: skip
    assert train.main(args) == 0
    assert "warning: the warm-up (5 steps) is as long as the run (4 steps)" in capsys.readouterr().err
    assert json.loads((tmp_path / "chosen" / "metrics.json").read_text())["hyperparameters"]["warmup_steps"] == 5


@pytest.mark.parametrize("method", ["lora", "sparse_lora", "hira", "qlora", "dora", "qdora"])
def test_short_run_per_method(method, tiny_model_dir, corpus, tmp_path):
    out = tmp_path / method
    args = ["--method", method, "--max-steps", "60", "--eval-every", "30", "--save-every", "30"]
    if method == "sparse_lora":  # λ is in loss-gradient units; sized for this tiny model
        args += ["--sparse-lambda", "1e-3"]
    assert train.main(train_args(tiny_model_dir, corpus, out, *args)) == 0
    names = {p.name for p in out.iterdir()}
    expected = {"adapter_config.json", "adapter_model.safetensors", "metrics.json", "train_log.jsonl", "README.md"}
    assert expected <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert METRIC_FIELDS <= metrics.keys() and metrics["finished"] and metrics["steps"] == 60
    assert metrics["test_perplexity"] == pytest.approx(2.718281828 ** metrics["test_loss"])
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    card = (out / "README.md").read_text()
    assert "N/A" not in card and f"{metrics['test_perplexity']:.3f}" in card and str(tiny_model_dir) in card
    losses = [row["loss"] for row in read_log(out) if row["split"] == "train"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.02, losses  # the training loss goes down
    validations = [row for row in read_log(out) if row["split"] == "validation"]
    assert [row["step"] for row in validations] == [30, 60]
    if method == "sparse_lora":
        # per layer query, key, value and three "dense" (attention output, intermediate, output), + the head's
        assert len(metrics["sparse_lora_gates"]) == 2 * 6 + 1
        ranks = [row["rank"] for row in metrics["sparse_lora_gates"]]
        assert metrics["zero_gate_share"] == pytest.approx(1 - sum(ranks) / (8 * len(ranks)))
        logged = {row["step"]: row["ranks"] for row in read_log(out) if row["split"] == "train"}  # gates over training
        assert logged[metrics["best_step"]] == ranks  # the report is of the best adapter, the one saved
        assert metrics["pruning_started_at"] == 15  # judged from a quarter of the run (60 steps)
    adapter = out / "adapter_model.safetensors"
    assert metrics["exported_file_bytes"] == adapter.stat().st_size
    assert metrics["exported_params"] == sum(t.numel() for t in load_file(str(adapter)).values())
    if method != "sparse_lora":
        assert metrics["exported_params"] == metrics["trainable_params"]  # the adapter is what was trained


def test_evaluate_compares_runs_with_the_base_model(tiny_model_dir, corpus, tmp_path):
    for method in ("lora", "hira"):
        args = ["--method", method, "--max-steps", "30", "--eval-every", "15"]
        assert train.main(train_args(tiny_model_dir, corpus, tmp_path / "runs" / method, *args)) == 0
    results = tmp_path / "results"
    argv = ["--runs-dir", str(tmp_path / "runs"), "--data-dir", str(corpus["text"]), "--output-dir", str(results),
            "--cache-dir", str(tmp_path / "runs" / "cache"), "--pseudo-perplexity", "2"]  # fmt: skip
    assert evaluate.main(argv) == 0
    rows = (results / "comparison-wikitext2.csv").read_text().splitlines()
    assert rows[0].startswith("method,base_model,trainable_params")
    assert [row.split(",")[0] for row in rows[1:]] == ["base", "hira", "lora"]
    table = (results / "comparison-wikitext2.md").read_text()
    assert "pseudo-perplexity" in table and (results / "comparison-wikitext2.png").stat().st_size > 10_000
    lora = json.loads((tmp_path / "runs" / "lora" / "metrics.json").read_text())
    lora_row = dict(zip(rows[0].split(","), rows[3].split(","), strict=True))
    assert float(lora_row["test_perplexity"]) == pytest.approx(lora["test_perplexity"], rel=1e-6)  # same masks
    base_row = dict(zip(rows[0].split(","), rows[1].split(","), strict=True))
    assert float(base_row["test_perplexity"]) > lora["test_perplexity"]  # fine-tuning helped


def run_cli(*argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, cwd=ROOT)


def wait_for(happened, process) -> None:
    """Wait until happened() is true, however long a loaded machine takes; fail if the process ends first."""
    while not happened():
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else ""
            pytest.fail(f"the process ended (code {process.returncode}) before the awaited event: {stderr}")
        time.sleep(0.005)


@pytest.mark.parametrize("task", ["wikitext2", "sst2"])
def test_resume_after_sigkill_is_bit_identical(task, tiny_model_dir, corpus, sentiment, tmp_path):
    common = ["--method", "sparse_lora", "--max-steps", "240", "--eval-every", "40", "--save-every", "20",
              "--sparse-lambda", "1e-4"]  # fmt: skip

    def args(out_dir, *extra):
        if task == "wikitext2":
            return train_args(tiny_model_dir, corpus, out_dir, *common, *extra)
        return [*train_args(tiny_model_dir, corpus, out_dir, *common, *extra), "--task", task,
                "--data-dir", str(sentiment[task]), "--batch-size", "16"]  # fmt: skip

    reference = tmp_path / "reference"
    assert run_cli("train.py", *args(reference)).returncode == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "train.py", *args(killed)], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    wait_for(lambda: list((killed / "checkpoints").glob("step-0000006*")), process)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL  # it really died mid-run
    assert not (killed / "metrics.json").exists()

    resumed = run_cli("train.py", *args(killed, "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stderr
    ours, theirs = (
        load_file(str(killed / "adapter_model.safetensors")),
        load_file(str(reference / "adapter_model.safetensors")),
    )
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert (killed / "adapter_config.json").read_text() == (reference / "adapter_config.json").read_text()
    a, b = json.loads((killed / "metrics.json").read_text()), json.loads((reference / "metrics.json").read_text())
    assert a["test_loss"] == b["test_loss"] and a["best_step"] == b["best_step"]
    assert [r for r in read_log(killed) if r["split"] == "validation"] == [
        r for r in read_log(reference) if r["split"] == "validation"
    ]


def ctrl_c_as_at_a_terminal():
    """Give SIGINT its default action, as a shell at a terminal does. A test run started in the background
    (`cmd &` in a script) inherits SIGINT ignored, and Python then turns no Ctrl-C into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt in this process for the test, however the test run was started."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_saves_a_checkpoint(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "train.py", *train_args(tiny_model_dir, corpus, out, "--method", "lora",
                                                    "--max-steps", "100000", "--save-every", "0")]  # fmt: skip
    process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_as_at_a_terminal)  # fmt: skip
    wait_for((out / "train_log.jsonl").exists, process)  # in the loop: step 5 was logged
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate()
    assert process.returncode == 130, stderr
    assert "checkpoint saved; continue with the same command plus --resume" in stderr and "Traceback" not in stderr
    assert len(list((out / "checkpoints").glob("step-*"))) == 1


def interrupt_at(monkeypatch, module, name: str, sig: int):
    """Make `module.name` send `sig` to this process as it is called: a Ctrl-C (SIGINT) or a SIGTERM that
    arrives at exactly that moment of the run, whatever the machine's speed."""
    original = getattr(module, name)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), sig)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, signalled)


@pytest.mark.parametrize(
    "moment, sig",
    [("loading the tokenizer", signal.SIGINT), ("tokenising", signal.SIGTERM), ("the first step", signal.SIGINT),
     ("the metrics", signal.SIGTERM), ("writing the card", signal.SIGINT)],
)  # fmt: skip
def test_an_interrupt_at_any_moment_is_one_line_and_exit_130(moment, sig, tiny_model_dir, sentiment, tmp_path,
                                                             capsys, monkeypatch, ctrl_c):  # fmt: skip
    where = {"loading the tokenizer": (minibert, "load_tokenizer"), "tokenising": (data, "encode_examples"),
             "the first step": (torch.nn.utils, "clip_grad_norm_"), "the metrics": (train, "final_metrics"),
             "writing the card": (train, "model_card")}  # fmt: skip
    interrupt_at(monkeypatch, *where[moment], sig)
    handler = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    args = train_args(tiny_model_dir, {"text": sentiment["sst2"]}, out, "--method", "lora", "--task", "sst2",
                      "--max-steps", "6", "--save-every", "3", "--eval-every", "3")  # fmt: skip
    assert train.main(args) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted"), err
    assert not (out / "metrics.json").exists() and not list(out.rglob(".*.tmp"))  # nothing half-written
    if moment == "the first step":  # in the loop: a checkpoint to resume from
        assert "checkpoint saved; continue with the same command plus --resume" in err
    elif moment in ("the metrics", "writing the card"):  # after the loop: the last checkpoint is named
        assert f"continue from {out / 'checkpoints' / 'step-00000006'} with the same command plus --resume" in err
    else:
        assert "nothing is half-written; run the command again" in err
    assert signal.getsignal(signal.SIGTERM) is handler  # main() put the handler back


def test_the_last_collective_waits_for_gloos_thread_to_let_go(monkeypatch):
    """A thread that still holds a tensor, as gloo's worker does just after a collective returns: the wait
    ends only once it has let go (signalled when the wait first sleeps, so no timing decides it)."""
    import threading

    import training.distributed

    tensor, sleeping = torch.zeros(3), threading.Event()
    holder = threading.Thread(target=lambda held: sleeping.wait() and held.clear(), args=([tensor],), daemon=True)
    holder.start()
    real_sleep = time.sleep
    monkeypatch.setattr(training.distributed.time, "sleep", lambda s: (sleeping.set(), real_sleep(s)))
    used = [weakref.ref(tensor)]
    del tensor
    training.distributed.wait_until_let_go(used)
    assert used[0]() is None and sleeping.is_set()  # it waited, and returned once the tensor was gone
    holder.join()


@pytest.mark.parametrize("task", ["wikitext2", "sst2"])
def test_torchrun_two_processes_equal_one_process(task, tiny_model_dir, corpus, sentiment, tmp_path):
    common = ["--method", "lora", "--max-steps", "12", "--eval-every", "0", "--dropout", "0"]
    if task != "wikitext2":  # examples of different lengths, padded per global batch, a mean over examples
        common += ["--task", task, "--data-dir", str(sentiment[task])]
    single = tmp_path / "single"
    assert train.main([*train_args(tiny_model_dir, corpus, single), *common]) == 0
    double = tmp_path / "double"
    args = [*train_args(tiny_model_dir, corpus, double), *common]
    args[args.index("--batch-size") + 1] = "4"  # 2 processes x 4 = the same global batch of 8
    result = run_cli("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py", *args)
    assert result.returncode == 0, result.stderr[-3000:]  # includes: both ranks ended with identical adapters
    assert json.loads((double / "metrics.json").read_text())["world_size"] == 2
    a, b = load_file(str(single / "adapter_model.safetensors")), load_file(str(double / "adapter_model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


# ---- bad input: one line on stderr, non-zero exit, no traceback, nothing written lost ----


def fails_cleanly(capsys, main, argv, message):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    return err


def refused_by_argparse(capsys, main, argv, message):
    """A flag's value refused by its type (training/flags.py): argparse's usage and one error line, exit 2."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err, err
    return err


def test_bad_input(tiny_model_dir, corpus, tmp_path, capsys):
    out = tmp_path / "out"
    base = train_args(tiny_model_dir, corpus, out, "--max-steps", "2", "--eval-every", "0")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--method", "adalora", *base])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    choices = "'lora', 'sparse_lora', 'hira', 'dora', 'qlora', 'qdora', 'head', 'full'"
    assert f"invalid choice: 'adalora' (choose from {choices})" in err
    fails_cleanly(capsys, train.main, ["--method", "lora", *base, "--model", str(tmp_path / "missing")],
                  "missing: no such directory")  # fmt: skip
    fails_cleanly(
        capsys,
        train.main,
        ["--method", "lora", *base, "--target-modules", "q_lin"],
        "match no linear layer of this bert model; its layer names are ['dense', 'key', 'query', 'value']",
    )
    fails_cleanly(capsys, train.main, ["--method", "lora", *base, "--data-dir", str(tmp_path)], "no train split")
    fails_cleanly(capsys, train.main, ["--method", "lora", *base, "--max-seq-len", "65"],
                  "--max-seq-len 65: ")  # fmt: skip
    refused_by_argparse(capsys, train.main, ["--method", "lora", *base, "--batch-size", "0"],
                        "argument --batch-size: must be at least 1, got 0")  # fmt: skip
    fails_cleanly(capsys, train.main, ["--method", "lora", *base, "--resume"], "--resume: no checkpoint in")

    assert train.main(["--method", "lora", *base, "--save-every", "1"]) == 0
    before = (out / "adapter_model.safetensors").read_bytes()
    fails_cleanly(capsys, train.main, ["--method", "lora", *base], "already holds a run; pass --resume")
    fails_cleanly(capsys, train.main, ["--method", "hira", *base, "--resume"],
                  "was made with method='lora', alpha=16.0, this command has method='hira', alpha=None")  # fmt: skip
    assert (out / "adapter_model.safetensors").read_bytes() == before  # nothing already written is lost
    fails_cleanly(capsys, evaluate.main, ["--runs-dir", str(tmp_path / "empty")], "no finished runs in")


def test_a_nan_loss_stops_the_run_and_keeps_the_checkpoint(tiny_model_dir, corpus, tmp_path, capsys):
    out = tmp_path / "diverges"
    args = ["--method", "lora", "--max-steps", "20", "--lr", "1e30", "--eval-every", "0", "--save-every", "1"]
    assert train.main(train_args(tiny_model_dir, corpus, out, *args)) == 3
    err = capsys.readouterr().err
    assert "the loss is nan" in err and "the last good checkpoint is kept: " in err and "Traceback" not in err
    assert list((out / "checkpoints").glob("step-*")) and not (out / "metrics.json").exists()
