"""The recipe of the converged GLUE comparison (tests/benchmarks/glue_suite.py): which files, which steps,
which learning rates, and the exact train.py command of every cell.

The recipe follows what finished runs need, not what an hour holds:
  - **Long enough to finish learning.** Each task runs up to MAX_STEPS steps of 16 (several epochs of the
    small tasks, as the LoRA paper's Table 9 and Mosbach et al. 2021 ask; SST-2's 66k sentences are capped at
    6,000 steps, 1.4 epochs: at 3,000 its curve still climbed, the target check showed) and stops early once
    PATIENCE validations in a row have not beaten the best (train.py --patience): the best checkpoint is then
    tested on the GLUE dev set. The adapters may run ADAPTER_LONGER times as long on the small tasks: a
    low-rank update learns more slowly than the full matrix (LoRA's CoLA at 1e-3 was still climbing at 3,840
    steps), and the LoRA paper, too, trains its adapters for many more epochs than full fine-tuning; early
    stopping makes the longer cap cost nothing where a run has finished. Their patience (and the head's)
    counts only after half the cap (--patience-from): an adapter starts from a zero update and may sit at the
    majority class for a thousand steps before it learns (LoRA's CoLA at 1e-4 was stopped at 1,440 steps,
    still at MCC 0). Full fine-tuning left the majority class at its first validations in every run, so its
    commands stay as they were.
  - **Validation** every EVAL_EVERY steps (about half an epoch of the small tasks) on a fixed slice of the
    training file (train.py's split policy: 10%, SST-2 872); never the test set.
  - **Warm-up** the first 6% of MAX_STEPS (the LoRA paper's ratio), then linear decay to MAX_STEPS.
  - **Learning rate** per method, from GRID's three rates at seed 0 on SWEEP_TASKS (a single-sentence task
    and a pair task, the two that short runs failed to learn): the rate with the best mean validation
    score is used on every task and seed. A chosen rate at the edge of the grid extends the grid by the
    next rate beyond it (x3 or /3) until the best is inside (glue_report.rates). Sparse LoRA takes LoRA's
    chosen rate instead (SAME_RATE): with its gates at one it starts as LoRA, so at the same rate the two
    rows differ by the gates alone. Its own sweep under its first rule chose 1e-3 on one seed, beside the
    rate where every adapter stays at CoLA's majority class, and one of its three CoLA seeds never left
    it (those cells: docs/glue/sparse-lora-old-rule-cells/). The head's sweep is
    read by its lowest validation loss instead (SWEEP_BY_LOSS): a linear head on a frozen encoder is a convex
    problem whose optimum the rate does not move, only whether and how fast SGD reaches it, and its score
    near the majority class flips on a handful of examples (read by score, its sweep chose an unstable 0.9).
  - **bf16 matmuls** (train.py --precision bf16, fp32 weights): what a GPU runs, and on this project's
    CPUs (AMX) 1.6-2.3x faster than fp32 (docs/performance.md); the first cells, run in fp32, are kept in
    docs/glue/fp32-cells/ to show that bf16 does not cost a method its score.
  - **The targets** (TARGETS: what finished full fine-tuning reaches on encoders of this size, from the
    MiniLM, DistilBERT and BERT-Small papers). Where full fine-tuning's seed-0 cell misses one, the suite
    runs it once more LONGER times as long, under the adapters' rule (patience only after its usual cap):
    if that run does no better, the curve says the model, not the recipe, is the limit.
  - Everything else is train.py's default: r = 8, alpha 16 on query and value, adapter dropout 0.1,
    weight decay 0.01, length-bucketed batches, sequences cut at 128 tokens.

A cell is stored with its command (glue_cells.py) and counts only while that command is the one this
recipe gives: change a number here and the cells it touches are run again, never mixed in.
"""

import csv
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

METHODS = ("head", "full", "lora", "sparse_lora", "hira", "dora", "qlora")
NAMES = {"head": "head only", "full": "full fine-tuning", "lora": "LoRA", "sparse_lora": "Sparse LoRA",
         "hira": "HiRA", "dora": "DoRA", "qlora": "QLoRA"}  # fmt: skip
GRID = {  # three peak learning rates per method, around what the one-hour sweep and the papers suggest
    "head": (1e-3, 3e-3, 1e-2),
    "full": (2e-5, 5e-5, 1e-4),
    "lora": (3e-4, 1e-3, 3e-3),
    "hira": (3e-3, 1e-2, 3e-2),
    "dora": (3e-4, 1e-3, 3e-3),
    "qlora": (3e-4, 1e-3, 3e-3),
}
SAME_RATE = {"sparse_lora": "lora"}  # methods trained at another's chosen rate, without a sweep of their own
SWEEP_TASKS = ("cola", "mrpc")
SWEEP_BY_LOSS = ("head",)  # methods whose sweep keeps the rate of the lowest validation loss (see the module doc)
TASKS = ("sst2", "mrpc", "cola", "stsb", "rte")
SEEDS = (0, 1, 2)
TARGETS = {"sst2": 0.88, "mrpc": 0.87, "cola": 0.30, "stsb": 0.82, "rte": 0.60}  # full fine-tuning's SCORE[task]
LONGER = 2  # how many times its cap the target check runs full fine-tuning
# Steps of batch 16 per task, at most (train examples after the validation split / 16 = steps per epoch:
# SST-2 66,477 / 4,155; CoLA 7,696 / 481; MRPC 3,672 / 230; STS-B 3,825 / 239; RTE 2,241 / 140; the cells'
# "examples". The STS-B copy of this project's machines has 4,249 training pairs, GLUE's own 5,749).
MAX_STEPS = {
    "sst2": 6000,
    "cola": 3840,
    "mrpc": 2290,
    "stsb": 3230,
    "rte": 2800,
}  # SST-2 1.4, CoLA 8, MRPC 10, STS-B 13.5, RTE 20 epochs
ADAPTERS = ("lora", "sparse_lora", "hira", "dora", "qlora")
ADAPTER_LONGER = {"sst2": 1, "cola": 2, "mrpc": 2, "stsb": 2, "rte": 2}  # how many times MAX_STEPS they may run
EVAL_EVERY = {"sst2": 250, "cola": 240, "mrpc": 115, "stsb": 160, "rte": 140}
PATIENCE = 5  # validations in a row without a better one: 2-3 epochs of the small tasks
MAX_SEQ_LEN = 128
# each task's score: the metric that picks the checkpoint, compares the sweep and fills the average
SCORE = {"sst2": "accuracy", "mrpc": "f1", "cola": "matthews_correlation", "stsb": "pearson", "rte": "accuracy"}
# the table's columns: (task, metric, title)
COLUMNS = [("sst2", "accuracy", "SST-2 acc"), ("mrpc", "accuracy", "MRPC acc"), ("mrpc", "f1", "MRPC F1"),
           ("cola", "matthews_correlation", "CoLA MCC"), ("stsb", "pearson", "STS-B Pearson"),
           ("rte", "accuracy", "RTE acc")]  # fmt: skip
# task: (folder in --glue-dir, train file, test file, {parquet column: file column}, CSV quoting)
SOURCES = {
    "sst2": ("glue-sst2", "train.tsv", "dev.tsv", {"sentence": "sentence", "label": "label"}, csv.QUOTE_NONE),
    "mrpc": ("glue-mrpc", "msr_paraphrase_train.txt", "msr_paraphrase_test.txt",
             {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}, csv.QUOTE_NONE),
    "cola": ("glue-cola", "train.tsv", "dev.tsv", {"sentence": "sentence", "label": "label"}, csv.QUOTE_NONE),
    "stsb": ("glue-stsb", "train.tsv", "dev.tsv", {"sentence1": "sentence1", "sentence2": "sentence2",
                                                   "label": "score"}, csv.QUOTE_NONE),
    "rte": ("glue-rte", "train.tsv", "dev.tsv", {"sentence1": "sentence1", "sentence2": "sentence2",
                                                 "label": "label"}, csv.QUOTE_MINIMAL),  # a TSV with CSV quoting
}  # fmt: skip
# How a command names the machine's folders, so that a stored command is the same on every machine.
PLACES = ("{GLUE}", "{MODEL}", "{CACHE}")


def build_glue(glue_dir: Path, out: Path, quick: bool = False) -> Path:
    """GLUE's files as the hub's parquet layout, <task>/{train,validation}-00000-of-00001.parquet, the
    test file saved as `validation` (what train.py tests on for a GLUE task). quick: only the first 1,200
    training and 200 test rows."""
    for task, (folder, train_file, test_file, columns, quoting) in SOURCES.items():
        for split, name, rows in (("train", train_file, 1200), ("validation", test_file, 200)):
            path = out / task / f"{split}-00000-of-00001.parquet"
            if path.is_file():
                continue
            with (glue_dir / folder / name).open(encoding="utf-8", newline="") as f:
                lines = list(csv.DictReader(f, delimiter="\t", quoting=quoting))[: rows if quick else None]
            label = float if task == "stsb" else int
            table = {ours: [line[theirs] for line in lines] for ours, theirs in columns.items()}
            table["label"] = [label(value) for value in table["label"]]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            pq.write_table(pa.table(table), tmp)
            tmp.replace(path)
    return out


def max_steps(method: str, task: str) -> int:
    """The most steps a run of this method on this task may take (it stops earlier once it has finished)."""
    return MAX_STEPS[task] * (ADAPTER_LONGER[task] if method in ADAPTERS else 1)


def command(method: str, task: str, lr: float, seed: int, longer: bool = False, quick: bool = False) -> list[str]:
    """The train.py arguments of one cell, the machine's folders as PLACES. longer: the target check, LONGER
    times the cap (see the module doc); quick: a few steps, to check that it runs."""
    steps = (6 if quick else max_steps(method, task)) * (LONGER if longer else 1)
    every = 3 if quick else EVAL_EVERY[task]
    late = [] if method == "full" and not longer else ["--patience-from", str(steps // 2)]  # see the module doc
    return ["--task", task, "--data-dir", "{GLUE}/" + task, "--model", "{MODEL}", "--cache-dir", "{CACHE}",
            "--method", method, "--lr", f"{lr:g}", "--seed", str(seed), "--epochs", "100", "--max-steps", str(steps),
            "--warmup-steps", str(round(0.06 * steps)), "--eval-every", str(every), "--patience", str(PATIENCE),
            *late, "--max-seq-len", str(MAX_SEQ_LEN), "--precision", "bf16", "--save-every", "0"]  # fmt: skip


def placed(argv: list[str], places: dict[str, Path]) -> list[str]:
    """The command with PLACES filled in: {"{GLUE}": Path(...), ...}."""
    out = []
    for arg in argv:
        for name, path in places.items():
            arg = arg.replace(name, str(path))
        out.append(arg)
    return out
