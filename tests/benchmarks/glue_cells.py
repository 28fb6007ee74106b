"""The converged GLUE comparison's results, kept in the repository: one small JSON file per finished run
(a "cell"), so that the table can be built over several sessions on a 2-core machine, rerun on a GPU in
one go, and checked by anyone (`glue_suite.py --rerun METHOD/TASK/SEED`).

    docs/glue/cells/<method>-<task>-lr<lr>-s<seed>.json

A cell holds the exact train.py arguments (the machine's folders as {GLUE}, {MODEL}, {CACHE}) and the git
commit it ran at; its method, task, seed, learning rate, the steps it took and whether it stopped early;
every validation and test metric of metrics.json; the validation curve (every validation) and the training
loss (every 50 steps); its wall time, trainable and exported parameters, peak memory and the machine.
The target checks (full fine-tuning run longer, glue_recipe.py) are kept alike in docs/glue/longer-cells/.
`load()` returns only the cells whose arguments are the ones the current recipe gives (glue_recipe.command):
a cell made under other settings is never mixed into the table.
"""

import json
import platform
import subprocess
from pathlib import Path

from minibert.files import write_text
from tests.benchmarks.glue_recipe import command
from tests.benchmarks.real_encoder import ROOT

CELLS = ROOT / "docs" / "glue" / "cells"
BASELINE = ROOT / "docs" / "glue" / "baseline.json"  # the majority / chance row, from the test files
FP32_CELLS = ROOT / "docs" / "glue" / "fp32-cells"  # the first cells, run in fp32 before the recipe took bf16
LONGER_CELLS = ROOT / "docs" / "glue" / "longer-cells"  # the target checks (glue_recipe.command's longer)


def name(method: str, task: str, lr: float, seed: int) -> str:
    return f"{method}-{task}-lr{lr:g}-s{seed}"


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    code = ["--", ".", ":!docs", ":!README.md"]  # the cells and reports the suite writes are not changes to the code
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", *code], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()  # fmt: skip
    return done.stdout.strip() + ("+changes" if dirty else "")


def record(run_dir: Path, argv: list[str], key: tuple, wall_s: float, threads: int) -> dict:
    """The cell of a finished run: its metrics.json and train_log.jsonl boiled down (see the module doc)."""
    method, task, lr, seed = key
    m = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    measured = {k: v for k, v in m.items() if k.startswith(("test_", "validation_")) and isinstance(v, float)}
    validation = [{k: v for k, v in row.items() if k != "split"} for row in log if row["split"] == "validation"]
    train_loss = [
        [row["step"], round(row["loss"], 4)] for row in log if row["split"] == "train" and row["step"] % 50 == 0
    ]
    return {
        "method": method, "task": task, "seed": seed, "lr": lr,
        "argv": argv, "commit": commit(),
        "steps": m["steps"], "best_step": m["best_step"], "stopped_early": m["stopped_early"], "epochs": m["epochs"],
        "metrics": measured,
        "validation_curve": validation, "train_loss": train_loss,
        "wall_s": round(wall_s, 1), "train_time_s": round(m["train_time_s"], 1),
        "eval_time_s": round(m["eval_time_s"], 1),
        "trainable_params": m["trainable_params"], "exported_params": m["exported_params"],
        "zero_gate_share": m.get("zero_gate_share"), **sparse_lora_fields(m),
        "peak_memory_mb": round(m["peak_memory_mb"], 1),
        "examples": {split: m[f"{split}_examples"] for split in ("train", "validation", "test")},
        "machine": f"{m['device']}, {threads} thread, torch {m['torch']}, {platform.machine()}",
    }  # fmt: skip


def sparse_lora_fields(metrics: dict) -> dict:
    """A Sparse LoRA run's gates at the end: the step judging started, the kept ranks per module (in the
    model's order, e.g. layer 0 query, layer 0 value, ...) and [min, median, max] of |g|, ‖B_i‖ and ξ."""
    if "sparse_lora_gates" not in metrics:
        return {}
    return {
        "pruning_started_at": metrics["pruning_started_at"],
        "kept_ranks": [row["rank"] for row in metrics["sparse_lora_gates"]],
        "gate_spread": metrics["gate_spread"],
    }


def save(cell: dict, folder: Path = CELLS) -> Path:
    path = folder / f"{name(cell['method'], cell['task'], cell['lr'], cell['seed'])}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(cell, indent=1) + "\n")
    return path


def read(folder: Path) -> dict[tuple, dict]:
    """{(method, task, lr, seed): cell} of every cell stored in the folder, whatever its recipe."""
    cells = {}
    for path in sorted(folder.glob("*.json")):
        cell = json.loads(path.read_text())
        cells[(cell["method"], cell["task"], cell["lr"], cell["seed"])] = cell
    return cells


def load(folder: Path = CELLS, quick: bool = False, longer: bool = False) -> dict[tuple, dict]:
    """The stored cells that the current recipe would run as they are (longer: the target checks')."""
    return {key: c for key, c in read(folder).items() if c["argv"] == command(*key, longer=longer, quick=quick)}
