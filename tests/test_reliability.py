"""What long runs meet: damaged checkpoints, a full disk, odd paths, file modes, several processes, and a
damaged run among good ones in evaluate.py and predict.py. Each is made on purpose, and each ends in one
line, loses nothing, and (where a run goes on) ends bit-identical to the run that met nothing."""

import errno
import json
import os
import signal
import stat
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import evaluate
import methods
import predict
import train
import training.checkpoints
from minibert.files import WriteError
from tests.test_loading import ROOT
from tests.test_train import fails_cleanly, run_cli, train_args, wait_for

COMMON = ["--method", "sparse_lora", "--sparse-lambda", "1e-3", "--max-steps", "60", "--eval-every", "20",
          "--save-every", "20", "--keep-checkpoints", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def reference(tiny_model_dir, corpus, tmp_path_factory):
    """The run that met nothing."""
    out = tmp_path_factory.mktemp("reference") / "run"
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON)) == 0
    return out


def assert_same_run(out, reference):
    ours, theirs = (
        load_file(str(out / "adapter_model.safetensors")),
        load_file(str(reference / "adapter_model.safetensors")),
    )
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    a, b = json.loads((out / "metrics.json").read_text()), json.loads((reference / "metrics.json").read_text())
    assert a["test_loss"] == b["test_loss"] and a["best_step"] == b["best_step"] and a["steps"] == b["steps"]


def leftovers(directory):
    return [p for p in directory.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]


class Killed(BaseException):
    """Stands for SIGKILL: nothing in train.py catches it."""


def interrupted_run(tiny_model_dir, corpus, out, monkeypatch):
    """The reference run, killed right after its step-40 checkpoint (checkpoints at steps 20 and 40)."""

    def save_then_die(out_dir, model, optimizer, state, *args, **kwargs):
        real_save(out_dir, model, optimizer, state, *args, **kwargs)
        if state["step"] == 40:
            raise Killed

    real_save = train.save_checkpoint
    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train.main(train_args(tiny_model_dir, corpus, out, *COMMON))
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    assert not (out / "metrics.json").exists()
    return out


def newest_checkpoint(out):
    return training.checkpoints.checkpoint_dirs(out)[0]


@pytest.mark.parametrize("damage", ["truncated state.safetensors", "cut-short state.json", "no manifest"])
def test_a_damaged_checkpoint_is_passed_over(damage, reference, tiny_model_dir, corpus, tmp_path, capsys, monkeypatch):
    out = interrupted_run(tiny_model_dir, corpus, tmp_path / "run", monkeypatch)
    newest = newest_checkpoint(out)
    assert newest.name == "step-00000040"
    if damage == "truncated state.safetensors":
        path = newest / "state.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "cut-short state.json":
        path = newest / "state.json"
        path.write_text(path.read_text()[:40])
    else:
        (newest / "manifest.json").unlink()
    capsys.readouterr()
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"checkpoint {newest} is damaged: " in err and "resumed from step 20" in err and "Traceback" not in err
    assert_same_run(out, reference)


def test_no_intact_checkpoint_is_one_line_and_deletes_nothing(tiny_model_dir, corpus, tmp_path, capsys, monkeypatch):
    out = interrupted_run(tiny_model_dir, corpus, tmp_path / "run", monkeypatch)
    for checkpoint in training.checkpoints.checkpoint_dirs(out):
        (checkpoint / "state.safetensors").write_bytes(b"garbage")
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    err = fails_cleanly(capsys, train.main, train_args(tiny_model_dir, corpus, out, *COMMON, "--resume"),
                        "--resume: no intact checkpoint in")  # fmt: skip
    assert "step-00000040 (state.safetensors has 7 bytes" in err and "step-00000020 (" in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before


def no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_a_checkpoint(reference, tiny_model_dir, corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    calls = []
    real = training.checkpoints.save_file

    def full_at_the_second(*args, **kwargs):  # the step-20 checkpoint is written, the step-40 one is not
        calls.append(1)
        return no_space() if len(calls) == 2 else real(*args, **kwargs)

    monkeypatch.setattr(training.checkpoints, "save_file", full_at_the_second)
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON)) == 4
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if not line.startswith("step ")]  # progress lines aside
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "error: could not write " in err and "step-00000040" in err and "No space left on device" in err
    assert f"resume from {out / 'checkpoints' / 'step-00000020'}" in err
    assert leftovers(out) == [] and [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000020"]
    monkeypatch.setattr(training.checkpoints, "save_file", real)  # space freed
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON, "--resume")) == 0
    assert_same_run(out, reference)


def test_disk_full_at_the_first_checkpoint(tiny_model_dir, corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(training.checkpoints, "save_file", no_space)
    out = tmp_path / "run"
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON)) == 4
    err = capsys.readouterr().err
    assert "step-00000020" in err and "No space left on device" in err and "no checkpoint yet" in err
    assert leftovers(out) == [] and list((out / "checkpoints").iterdir()) == []


def test_disk_full_at_the_final_adapter(reference, tiny_model_dir, corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = methods.save_adapter

    def full_at_the_end(model, out_dir):  # the final save comes after the step-60 checkpoint
        if (out / "checkpoints" / "step-00000060").exists():
            raise WriteError(out_dir / "adapter_model.safetensors", OSError(errno.ENOSPC, "No space left on device"))
        return real(model, out_dir)

    monkeypatch.setattr(methods, "save_adapter", full_at_the_end)
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON)) == 4
    err = capsys.readouterr().err
    assert "adapter_model.safetensors: OSError: [Errno 28] No space left on device" in err
    assert f"resume from {out / 'checkpoints' / 'step-00000060'}" in err
    assert not (out / "metrics.json").exists() and leftovers(out) == []
    monkeypatch.setattr(methods, "save_adapter", real)
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON, "--resume")) == 0
    assert_same_run(out, reference)


def test_paths_are_checked_before_any_work(tiny_model_dir, corpus, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    base = ["--method", "lora", "--max-steps", "2"]
    fails_cleanly(capsys, train.main, train_args(tiny_model_dir, corpus, a_file, *base),
                  "a file, not a folder")  # fmt: skip
    fails_cleanly(capsys, train.main, train_args(tiny_model_dir, corpus, a_file / "run", *base),
                  "cannot write there")  # fmt: skip
    fails_cleanly(capsys, train.main, [*train_args(tiny_model_dir, corpus, tmp_path / "r", *base), "--data-dir",
                                       str(a_file)], "a file, not a directory")  # fmt: skip
    fails_cleanly(capsys, train.main, [*train_args(tiny_model_dir, corpus, tmp_path / "r", *base), "--model",
                                       str(a_file)], "a file, not a model directory")  # fmt: skip


def test_files_follow_the_umask(tiny_model_dir, corpus, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON, "--max-steps", "20")) == 0
    finally:
        os.umask(old)
    written = [p for p in [*out.rglob("*"), *(tmp_path / "cache").rglob("*")]]
    assert len(written) > 10
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_keep_checkpoints(tiny_model_dir, corpus, tmp_path):
    out = tmp_path / "run"
    args = ["--method", "lora", "--max-steps", "50", "--save-every", "10", "--eval-every", "0"]
    assert train.main(train_args(tiny_model_dir, corpus, out, *args, "--keep-checkpoints", "1")) == 0
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000050"]


def test_two_process_resume_with_dropout_is_bit_identical(tiny_model_dir, corpus, tmp_path):
    common = ["--method", "lora", "--max-steps", "60", "--eval-every", "20", "--save-every", "20", "--dropout", "0.3",
              "--batch-size", "4"]  # fmt: skip
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]
    reference = tmp_path / "reference"
    result = run_cli(*torchrun, *train_args(tiny_model_dir, corpus, reference), *common)
    assert result.returncode == 0, result.stderr  # whole: a worker's abort message is at its start

    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, *torchrun, *train_args(tiny_model_dir, corpus, killed), *common],
                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    wait_for(lambda: list((killed / "checkpoints").glob("step-00000020")), process)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both workers
    process.wait()
    assert not (killed / "metrics.json").exists()
    result = run_cli(*torchrun, *train_args(tiny_model_dir, corpus, killed), *common, "--resume")
    assert result.returncode == 0, result.stderr  # whole: a worker's abort message is at its start
    assert_same_run(killed, reference)


def test_evaluate_and_predict_meet_a_damaged_run(reference, tiny_model_dir, corpus, tmp_path, capsys):
    runs = tmp_path / "runs"
    for name in ("good", "bad-metrics", "bad-adapter"):
        assert train.main(train_args(tiny_model_dir, corpus, runs / name, "--method", "lora", "--max-steps", "5",
                                     "--eval-every", "0", "--save-every", "0")) == 0  # fmt: skip
    (runs / "bad-metrics" / "metrics.json").write_text('{"finished": tr')
    adapter = runs / "bad-adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:50])
    capsys.readouterr()
    argv = ["--runs-dir", str(runs), "--data-dir", str(corpus["text"]), "--output-dir", str(tmp_path / "results"),
            "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    assert evaluate.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert f"skipped {runs / 'bad-metrics'}: " in err and "metrics.json: not valid JSON" in err
    assert f"skipped {runs / 'bad-adapter'}: " in err and "not a readable safetensors file" in err
    rows = (tmp_path / "results" / "comparison-wikitext2.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["base", "lora"]  # the good run, compared
    fails_cleanly(capsys, predict.main, [str(runs / "bad-metrics"), "a [MASK] ."], "metrics.json: not valid JSON")
    fails_cleanly(capsys, predict.main, [str(runs / "bad-adapter"), "a [MASK] ."], "not a readable safetensors")


def record_syncs(monkeypatch) -> list[tuple]:
    """Every os.fsync (by the path of its descriptor) and os.replace / rename, in the order they happen."""
    calls = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        calls.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_an_atomic_write_syncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    """Durable against a power cut: the data on disk before the name points at it, then the name itself."""
    from minibert.files import write_text

    calls = record_syncs(monkeypatch)
    write_text(tmp_path / "metrics.json", "{}\n")
    (kind, tmp), replaced, folder = calls
    assert kind == "fsync" and tmp.startswith(str(tmp_path / ".metrics.json.")) and tmp.endswith(".tmp")
    assert replaced == ("replace", tmp, str(tmp_path / "metrics.json"))
    assert folder == ("fsync", str(tmp_path))


def test_a_checkpoint_is_synced_file_by_file_then_its_folder_then_its_parent(tmp_path, monkeypatch):
    from minibert.files import write_directory_atomically, write_file

    calls = record_syncs(monkeypatch)
    renamed = []
    real_rename = type(tmp_path).rename
    monkeypatch.setattr(
        type(tmp_path), "rename", lambda self, target: renamed.append(len(calls)) or real_rename(self, target)
    )

    def fill(directory):
        for name in ("state.safetensors", "state.json"):
            write_file(directory / name, lambda path: open(path, "w").write("x"))

    write_directory_atomically(tmp_path / "step-00000002", fill)
    synced = [path for _, path in calls]
    tmp = os.path.dirname(synced[0])
    assert synced == [f"{tmp}/state.safetensors", f"{tmp}/state.json", tmp, str(tmp_path)]
    assert renamed == [3]  # the directory renamed after its files and itself were synced, before its parent


def test_the_log_is_synced_at_every_checkpoint(tiny_model_dir, corpus, tmp_path, monkeypatch):
    calls = record_syncs(monkeypatch)
    out = tmp_path / "run"
    args = ["--method", "lora", "--max-steps", "4", "--eval-every", "0", "--save-every", "2", "--log-every", "1"]
    assert train.main(train_args(tiny_model_dir, corpus, out, *args)) == 0
    log_syncs = [i for i, call in enumerate(calls) if call == ("fsync", str(out / "train_log.jsonl"))]
    assert len(log_syncs) == 2  # steps 2 and 4


def test_a_log_cut_mid_line_is_read_without_it_and_resume_carries_on(reference, tiny_model_dir, corpus, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    """A power cut leaves an appended log with a broken last line: evaluate.py reads the lines before it, and
    --resume drops it and ends as the run that met nothing."""
    out = interrupted_run(tiny_model_dir, corpus, tmp_path / "run", monkeypatch)
    log = out / "train_log.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"step": 41, "split": "tra')  # cut mid-line, after the step-40 checkpoint
    assert evaluate.read_log(log) == [json.loads(line) for line in whole.splitlines()]
    assert train.main(train_args(tiny_model_dir, corpus, out, *COMMON, "--resume")) == 0
    assert_same_run(out, reference)
    assert all(json.loads(line) for line in log.read_text().splitlines())  # no broken line left
