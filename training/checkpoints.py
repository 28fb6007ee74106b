"""Checkpoints: everything a run needs to continue exactly where it stopped, and proof that it is whole.

A checkpoint is a directory checkpoints/step-NNNNNNNN/ with
    state.safetensors   the trainable parameters, AdamW's moments and step, and the best adapter so far
    state.json          the step, the best validation result so far, times, and the run's identity
    manifest.json       the size and SHA-256 of the two files above, written last
Tensors go to safetensors and the rest to JSON: nothing is pickled. The directory is written under a
temporary name and renamed into place (minibert/files.py), so a checkpoint is complete or absent. A copy
can still be damaged later (a crash while copying a run, a bad disk): `--resume` checks the manifest of
the newest checkpoint, says in one line what is wrong with a damaged one, and resumes from the newest
intact one. Only --keep-checkpoints checkpoints are kept, and the newest intact one is never deleted.

Exactness: the data order and masks are drawn from (seed, epoch, step), and dropout from a generator
reseeded at every step from (seed, step, rank) (train.py), so no random state has to be carried over:
a resumed run, on one process or many, continues bit for bit as the uninterrupted run would have.
"""

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from minibert.files import write_directory_atomically, write_file, write_text

FILES = ("state.safetensors", "state.json")  # what the manifest vouches for

# What a checkpoint must have been made with for --resume to continue it: everything that changes what its
# weights mean or how they go on learning. Only the length of the run and its cadence may change (--epochs,
# --max-steps, --eval-every, --save-every, --log-every, --keep-checkpoints) and where it runs (--device).
RESUME_IDENTITY = ("data_files", "method", "model", "r", "alpha", "dropout", "target_modules", "sparse_lambda",
                   "sora_rule", "sora_l1", "sora_schedule", "blocksize", "no_double_quant", "max_seq_len",
                   "batch_size", "seed", "lr", "warmup_steps", "weight_decay")  # fmt: skip


class ResumeError(Exception):
    """--resume cannot continue this run; the message says why and what to do."""


def run_identity(args, task, world: int) -> dict:
    """What this run is, for --resume to compare with a checkpoint's (RESUME_IDENTITY, the task, the processes)."""
    return {"task": task.name, "world_size": world, **{key: getattr(args, key) for key in RESUME_IDENTITY}}


def checkpoint_dirs(out_dir: Path) -> list[Path]:
    """The run's checkpoints, newest first."""
    return sorted((Path(out_dir) / "checkpoints").glob("step-*"), reverse=True)


def save_checkpoint(out_dir: Path, model, optimizer, state: dict, best_adapter: dict, keep: int) -> None:
    """Write checkpoints/step-<step>/ (see module doc), then delete all but the `keep` newest."""
    tensors = {f"best.{name}": t for name, t in best_adapter.items()}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"param.{name}"] = p.detach()
            for key, value in optimizer.state.get(p, {}).items():  # AdamW: step, exp_avg, exp_avg_sq
                tensors[f"adam.{key}.{name}"] = value.reshape(-1) if value.dim() == 0 else value
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    def fill(directory: Path):
        write_file(directory / "state.safetensors", lambda path: save_file(tensors, path))
        write_file(directory / "state.json", lambda path: Path(path).write_text(json.dumps(state, indent=2)))
        manifest = {"files": {name: describe(directory / name) for name in FILES}}
        write_file(directory / "manifest.json", lambda path: Path(path).write_text(json.dumps(manifest, indent=2)))

    root = Path(out_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{state['step']:08d}"
    write_directory_atomically(final, fill)
    if damage(final) is None:  # delete older ones only once the new one is known to be whole
        for old in checkpoint_dirs(out_dir)[keep:]:
            shutil.rmtree(old)


def describe(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def damage(checkpoint: Path) -> str | None:
    """What is wrong with a checkpoint directory, or None if its files are those its manifest describes."""
    try:
        manifest = json.loads((checkpoint / "manifest.json").read_text())["files"]
    except FileNotFoundError:
        return "manifest.json is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"manifest.json is unreadable ({type(e).__name__})"
    for name in FILES:
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        expected, found = manifest.get(name, {}), describe(path)
        if found["bytes"] != expected.get("bytes"):
            return f"{name} has {found['bytes']:,} bytes, the manifest says {expected.get('bytes')}"
        if found["sha256"] != expected.get("sha256"):
            return f"{name} does not match its checksum"
    return None


def latest_intact(out_dir: Path) -> Path | None:
    return next((c for c in checkpoint_dirs(out_dir) if damage(c) is None), None)


def load_checkpoint(out_dir: Path, model, optimizer, expected: dict, say) -> tuple[dict, dict]:
    """Restore the newest intact checkpoint into model and optimizer; returns (its state.json, the best
    adapter so far). `expected`: the run identity (method, model, alpha, seed, ...: RESUME_IDENTITY),
    which must equal the checkpoint's; every key that differs is named. `say(line)` reports each damaged
    checkpoint passed over."""
    found = checkpoint_dirs(out_dir)
    if not found:
        raise ResumeError(f"--resume: no checkpoint in {Path(out_dir) / 'checkpoints'}; run without --resume to start")
    damaged = []
    for path in found:
        problem = damage(path)
        if problem is None:
            break
        damaged.append(f"{path.name} ({problem})")
        say(f"checkpoint {path} is damaged: {problem}; trying the one before it")
    else:
        raise ResumeError(
            f"--resume: no intact checkpoint in {Path(out_dir) / 'checkpoints'}: {'; '.join(damaged)}. "
            "Nothing was deleted; start again without --resume in another --output-dir"
        )
    state = json.loads((path / "state.json").read_text())
    made = state["run"]  # a key an older checkpoint did not record is not compared
    differ = [key for key, value in expected.items() if key in made and made[key] != value]
    if differ:
        was = ", ".join(f"{key}={made[key]!r}" for key in differ)
        now = ", ".join(f"{key}={expected[key]!r}" for key in differ)
        raise ResumeError(
            f"--resume: {path} was made with {was}, this command has {now}; resume with the "
            "same values (only the run's length and cadence may change) or another --output-dir"
        )
    with safe_open(str(path / "state.safetensors"), framework="pt") as f, torch.no_grad():
        keys = set(f.keys())
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(f.get_tensor(f"param.{name}"))
                adam = {
                    key: f.get_tensor(f"adam.{key}.{name}")
                    for key in ("step", "exp_avg", "exp_avg_sq")
                    if f"adam.{key}.{name}" in keys
                }
                if adam:
                    adam["step"] = adam["step"].reshape(())
                    optimizer.state[p] = {k: v.to(p.device) for k, v in adam.items()}
        best = {key[len("best.") :]: f.get_tensor(key) for key in keys if key.startswith("best.")}
    return state, best


def trim_log(log_path: Path, last_step: int) -> None:
    """On resume, drop the log lines of steps after the checkpoint (they are about to be run again), and a
    last line cut off by a crash."""
    if not log_path.exists():
        return
    kept = []
    for line in log_path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut off mid-write
    write_text(log_path, "".join(line + "\n" for line in kept))
