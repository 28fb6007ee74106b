"""Checkpoints: everything a run needs to continue exactly where it stopped.

A checkpoint is a directory checkpoints/step-NNNNNNNN/ with
    state.safetensors   the trainable parameters, AdamW's moments and step, the torch RNG state(s)
    state.json          the step, the best validation result so far, times, and the run's identity
Tensors go to safetensors and the rest to JSON: nothing is pickled. The directory is written under a
temporary name and renamed into place, so a checkpoint is complete or absent, never half-written.
With the data order and masks drawn from (seed, epoch, step) (data/masking.py) and the RNG state
restored, a resumed run continues bit for bit as the uninterrupted run would have.
"""

import json
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from methods.peft_format import write_atomically

KEEP = 2  # checkpoints kept; older ones are deleted once a newer one is complete


class ResumeError(Exception):
    """--resume cannot continue this run; the message says why and what to do."""


def save_checkpoint(out_dir: Path, model, optimizer, state: dict) -> None:
    tensors = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"param.{name}"] = p.detach()
            for key, value in optimizer.state.get(p, {}).items():  # AdamW: step, exp_avg, exp_avg_sq
                tensors[f"adam.{key}.{name}"] = value.reshape(-1) if value.dim() == 0 else value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    final = root / f"step-{state['step']:08d}"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)  # atomic: a checkpoint directory is complete or absent
    for old in sorted(root.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old)


def load_checkpoint(out_dir: Path, model, optimizer, expected: dict) -> dict:
    """Restore the newest checkpoint into model and optimizer; returns its state.json. `expected`: the
    run identity (method, model, seed, ...), which must equal the checkpoint's."""
    candidates = sorted((out_dir / "checkpoints").glob("step-*"))
    if not candidates:
        raise ResumeError(f"--resume: no checkpoint in {out_dir / 'checkpoints'}; run without --resume to start")
    path = candidates[-1]
    state = json.loads((path / "state.json").read_text())
    for key, value in expected.items():
        if state["run"].get(key) != value:
            raise ResumeError(
                f"--resume: {path} was made with {key}={state['run'].get(key)!r}, this command has {value!r}; "
                "use the same arguments or another --output-dir"
            )
    tensors = load_file(str(path / "state.safetensors"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(tensors[f"param.{name}"])
                adam = {
                    key: tensors[f"adam.{key}.{name}"]
                    for key in ("step", "exp_avg", "exp_avg_sq")
                    if f"adam.{key}.{name}" in tensors
                }
                if adam:
                    adam["step"] = adam["step"].reshape(())
                    optimizer.state[p] = {k: v.to(p.device) for k, v in adam.items()}
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def trim_log(log_path: Path, last_step: int) -> None:
    """On resume, drop the log lines of steps after the checkpoint: they are about to be run again."""
    if log_path.exists():
        lines = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
        write_text(log_path, "".join(line + "\n" for line in lines))
