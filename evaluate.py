"""Score every finished run on its task's test split, side by side: one table and one plot per task.

    python evaluate.py                          # every finished run under runs/
    python evaluate.py runs/lora-sst2-bert-base-uncased runs/head-sst2-bert-base-uncased
    python evaluate.py --pseudo-perplexity 50     # WikiText-2 rows also get pseudo-perplexity

WikiText-2 (masked LM): for each base model the row "base" is the model without any adapter, so the
effect of fine-tuning is visible. Every row is scored on the same blocks with the same fixed masks
(data/masking.py):
    perplexity  = exp(mean cross-entropy over the masked tokens)
    accuracy    = top-1 (and top-5) prediction of the masked tokens
    --pseudo-perplexity N: mask one token at a time over the first N test blocks (Salazar, Liang,
                Nguyen, Kirchhoff, "Masked Language Model Scoring", ACL 2020, Section 2.3):
                PPPL = exp(-mean over tokens t of log p(w_t | all other tokens)); independent of masks.
Classification and regression (SST-2, IMDB, GLUE, your files): the task's metrics on its test split(s)
(data/labelled.py says which split that is; MNLI: matched and mismatched); the baseline row is the
`head` run (only the classification head trained) when there is one. A run trained without a test file
has nothing to score here and is skipped, with one line saying so.

Inference throughput (samples/s after warm-up) and peak memory are measured for each row in its own
process, so that one row's memory does not count in the next one's.

Writes results/comparison-<task>.md, .csv and .png for every task that has runs. A damaged run (an
unreadable metrics.json, a truncated adapter) is skipped with one line saying which and why, and the
others are still compared. --output-dir is checked before any work. Its files are replaced at every
run (a line says which were there), the rule of every script here. Exit codes: 0 every run compared;
1 some run skipped; 2 a usage error (one line); 4 a result could not be written.
"""

import argparse
import csv
import io
import json
import math
import multiprocessing
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import data
import minibert
import quant
import tasks
from minibert.files import WriteError, folder_problem, write_atomically, write_text
from training.device import PRECISION_HELP, PRECISIONS, autocast, choose_device, choose_precision, peak_memory
from training.exits import USER_ERRORS
from training.flags import non_negative_int, positive_int
from training.groups import group_seeds
from training.runs import RunError, load_run_model, read_run

COMMON_FIRST = [
    ("method", "method"),
    ("base_model", "base model"),
    ("trainable_params", "trainable params"),
    ("trainable_percent", "trainable %"),
    ("exported_params", "exported params"),  # what the saved adapter holds (Sparse LoRA: the pruned ranks only)
    ("zero_gate_share", "zero gates"),  # Sparse LoRA: the share of gates exactly zero
    ("model_size_mb", "size MB"),
]
COMMON_LAST = [
    ("train_time_s", "train time s"),
    ("train_samples_per_s", "train samples/s"),
    ("inference_samples_per_s", "inference samples/s"),
    ("peak_memory_mb", "peak memory MB"),
]
MLM_COLUMNS = [
    ("test_perplexity", "test perplexity"),
    ("test_accuracy", "accuracy"),
    ("test_top5_accuracy", "top-5 accuracy"),
    ("pseudo_perplexity", "pseudo-perplexity"),
]
METRIC_TITLES = {"accuracy": "accuracy", "f1": "F1", "macro_f1": "macro F1", "matthews_correlation": "MCC",
                 "pearson": "Pearson", "spearman": "Spearman", "mse": "MSE", "loss": "loss"}  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories (default: every finished run under --runs-dir)")
    p.add_argument("--runs-dir", default="runs", help="where train.py wrote its runs (default runs)")
    p.add_argument("--data-dir", default=None, help="the tasks' files, as for train.py (default: the hub)")
    p.add_argument("--output-dir", default="results", help="where the tables and plots go (default results)")
    p.add_argument(
        "--batch-size", type=positive_int, default=64, help="blocks or examples per evaluation batch (default 64)"
    )
    p.add_argument(
        "--throughput-batch-size", type=positive_int, default=32, help="batch for inference timing (default 32)"
    )
    p.add_argument("--pseudo-perplexity", type=non_negative_int, default=0, metavar="N",
                   help="WikiText-2: also PPPL on the first N test blocks")  # fmt: skip
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=PRECISION_HELP,
    )
    p.add_argument("--cache-dir", default=None, help="cache of token ids (default ~/.cache/minibert-peft)")
    return p.parse_args(argv)


def find_runs(args, skipped: list[str]) -> list[dict]:
    """metrics.json of every finished run (given, or found under --runs-dir); a run whose metrics.json
    cannot be read is added to `skipped` (a line saying which and why), and the others are still compared."""
    candidates = [Path(r) for r in args.runs] or sorted(p.parent for p in Path(args.runs_dir).glob("*/metrics.json"))
    runs = []
    for run_dir in candidates:
        try:
            runs.append(read_run(run_dir))
        except RunError as e:
            skipped.append(f"skipped {run_dir}: {e}")
    if not runs and not skipped:
        raise data.DataError(
            f"no finished runs in {args.runs_dir}/ (a finished run has metrics.json); train one first, "
            "e.g. python train.py --method lora"
        )
    return runs


def table_rows(runs: list[dict]) -> dict[str, list[dict]]:
    """{task: rows}, each task's rows grouped by base model: first its baseline (WikiText-2: the base model
    without adapter, measured here; classification: the `head` run, if any), then the other runs."""
    tables = {}
    for task in dict.fromkeys(r["task"] for r in runs):
        rows = []
        for base in dict.fromkeys(r["base_model"] for r in runs if r["task"] == task):
            group = [r for r in runs if r["task"] == task and r["base_model"] == base]
            first = group[0]
            if first["task_kind"] == "mlm":
                rows.append(
                    {
                        **{key: first.get(key) for key in ("task", "task_kind", "task_title", "data_files")},
                        "method": "base",
                        "base_model": base,
                        "hyperparameters": {"max_seq_len": first["hyperparameters"]["max_seq_len"]},
                        "trainable_params": 0,
                        "trainable_percent": 0.0,
                        "total_params": first["total_params"] - first["trainable_params"],
                    }
                )
            rows += sorted(group, key=lambda r: r["method"] != "head")  # the head baseline first
        tables[task] = rows
    return tables


@torch.no_grad()
def pseudo_perplexity(model, blocks: torch.Tensor, vocab: data.MaskingVocab, device, batch_size: int) -> float:
    """exp(-mean log p(w_t | rest)), masking every non-special position of every block once."""
    log_probs = []
    for block in blocks:
        positions = torch.nonzero(~torch.isin(block, torch.tensor(vocab.special_ids))).view(-1)  # (P,)
        copies = block.repeat(len(positions), 1)  # (P, T): one copy per position to mask
        rows = torch.arange(len(positions))
        labels = torch.full_like(copies, data.IGNORE)
        labels[rows, positions] = block[positions]
        copies[rows, positions] = vocab.mask_id
        for i in range(0, len(positions), batch_size):
            ids, lab = copies[i : i + batch_size].to(device), labels[i : i + batch_size].to(device)
            logits = model.masked_logits(ids, lab).float()  # (b, V): one masked position per copy
            log_probs.append(-F.cross_entropy(logits, lab[lab != data.IGNORE], reduction="none").cpu())
    return math.exp(-torch.cat(log_probs).mean().item())


def evaluate_row(row: dict, args_dict: dict) -> dict:
    """Everything measured for one row; run in its own process (see module docstring)."""
    args = argparse.Namespace(**args_dict)
    device = choose_device(args.device)
    precision = choose_precision(args.precision, device)
    task = tasks.from_run(row)
    if not task.test_splits:
        raise RunError(f"{row['run_dir']}: trained without a --test-file, so there is nothing to score")
    tokenizer = minibert.load_tokenizer(row["base_model"])
    cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
    data_dir = None if row.get("data_files") else args.data_dir
    task.load_data(tokenizer, data_dir, cache_dir, row["hyperparameters"]["max_seq_len"], splits=task.test_splits)
    model = load_run_model(task, row, device)
    measured = {}
    for split in task.test_splits:
        result = task.evaluate(model, split, args.batch_size, device, precision)
        measured |= {f"{split}_{key}": value for key, value in result.items()}
    measured["model_size_mb"] = quant.model_bytes(model) / 1e6
    if args.pseudo_perplexity and task.kind == "mlm":
        measured["pseudo_perplexity"] = pseudo_perplexity(
            model, task.blocks["test"][: args.pseudo_perplexity], task.vocab, device, args.batch_size
        )
    # Inference throughput: forward passes over one batch of test examples, after two warm-up passes.
    batch = {key: value.to(device) for key, value in task.sample_batch("test", args.throughput_batch_size).items()}
    timings = []
    with torch.no_grad(), autocast(device, precision):
        for i in range(12):
            start = time.perf_counter()
            task.logits(model, batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                timings.append(time.perf_counter() - start)
    measured["inference_samples_per_s"] = len(batch["input_ids"]) / (sum(timings) / len(timings))
    measured.update(peak_memory(device))
    return measured


def main(argv=None) -> int:
    """0: every run compared; 1: some run was skipped as damaged (each said in one line); 2: a usage error;
    4: a result could not be written."""
    args = parse_args(argv)
    skipped = []
    try:
        choose_device(args.device)
        problem = folder_problem(args.output_dir)
        if problem is not None:
            raise RunError(f"--output-dir {args.output_dir}: {problem}; choose another")
        runs = find_runs(args, skipped)
    except (RunError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    context = multiprocessing.get_context("spawn")  # a fresh process per row: clean memory measurements
    for task, rows in table_rows(runs).items():
        for row in list(rows):
            label = f"{task} {row['method']} ({row['base_model']})" if row["method"] == "base" else row["run_dir"]
            print(f"evaluating {label} ...", file=sys.stderr)
            with context.Pool(1) as pool:
                try:
                    row.update(pool.apply(evaluate_row, (row, vars(args))))
                except (RunError, *USER_ERRORS) as e:  # a damaged run (or base model): compare the others
                    skipped.append(f"skipped {label}: {e}")
                    rows.remove(row)
        if rows:
            try:
                write_results(task, rows, Path(args.output_dir))
                plot_curves(tasks.from_run(rows[-1]), rows, Path(args.output_dir) / f"curves-{task}.png")
            except WriteError as e:
                print(f"error: {e}", file=sys.stderr)
                return 4
    for line in skipped:
        print(line, file=sys.stderr)
    return 1 if skipped else 0


def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def task_columns(task, rows: list[dict]) -> list[tuple[str, str]]:
    """The test metrics' columns: masked LM's, or the task's own metrics per test split (MNLI: two)."""
    if task.kind == "mlm":
        return MLM_COLUMNS
    columns = []
    for split in task.test_splits:
        where = "" if split == "test" else f" ({split.removeprefix('test_')})"
        columns += [(f"{split}_{name}", METRIC_TITLES.get(name, name) + where) for name in (*task.metrics, "loss")]
    return columns


def write_results(task_name: str, runs: list[dict], out_dir: Path) -> None:
    """The table (md, csv) and the bar plot of one task: one row per group of seeds (training/groups.py)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    task = tasks.from_run(runs[-1])
    rows = group_seeds(runs)
    columns = COMMON_FIRST + task_columns(task, rows) + COMMON_LAST
    columns = [(key, title) for key, title in columns if any(row.get(key) is not None for row in rows)]
    columns.append(("n", "n"))  # the number of seeds behind each row
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [cell(row.get(key)) + (f" ± {cell(row[f'{key}_std'])}" if row.get(f"{key}_std") is not None else "")
                 for key, _ in columns]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    run = rows[-1]
    if task.kind == "mlm":
        scored = "Test split, the same fixed masks for every row; perplexity = exp(mean cross-entropy)."
    else:
        sources = ", ".join(str(run.get(f"{split}_source", "")) for split in task.test_splits)
        labels = ", ".join(run.get("label_names") or []) or "one score (regression)"
        scored = f"Test split: {sources}; labels: {labels}; F1 is of the second class, macro F1 the mean over classes."
    note = (
        f"\n{scored} Training columns come from each run's metrics.json; inference and memory were "
        f"measured now, each row in its own process (memory: {rows[0].get('peak_memory_kind', '')}).\n"
    )
    stem = out_dir / f"comparison-{task_name}"
    paths = [stem.with_suffix(suffix) for suffix in (".md", ".csv", ".png")]
    replaced = [path.name for path in paths if path.exists()]
    write_text(paths[0], f"## {task.title}\n\n" + table + note)
    measured = {key for key, _ in columns if any(row.get(f"{key}_std") is not None for row in rows)}
    csv_columns = [name for key, _ in columns for name in ((key, f"{key}_std") if key in measured else (key,))]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns)  # the mean under the metric's name, the standard deviation as <name>_std
    writer.writerows([[row.get(key) for key in csv_columns] for row in rows])
    write_text(paths[1], buffer.getvalue())
    plot(task, rows, paths[2])
    print(table)
    print(f"written: {', '.join(map(str, paths))}" + (f" (replacing {', '.join(replaced)})" if replaced else ""))


def plot(task, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    mlm = task.kind == "mlm"
    curve_metric = task.selection  # the validation metric that picked the best checkpoint
    bar_metric = "test_perplexity" if mlm else f"test_{task.selection}"
    better = "higher" if task.higher_is_better else "lower"
    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in rows:
        log = Path(row.get("run_dir", "")) / "train_log.jsonl"
        if row["method"] != "base" and log.is_file():
            points = [p for p in read_log(log) if p["split"] == "validation"]
            curves.plot([p["step"] for p in points], [p[curve_metric] for p in points], marker="o", label=row["method"])
    curves.set(title=f"{task.title}: validation {curve_metric}", xlabel="step", ylabel=curve_metric)
    curves.legend()
    labels = [f"{r['method']}\n{r['trainable_params']:,} trainable\nn = {r['n']}" for r in rows]
    errors = [r.get(f"{bar_metric}_std") or 0.0 for r in rows]  # one standard deviation over the seeds
    bars.bar(range(len(rows)), [r[bar_metric] for r in rows], yerr=errors, capsize=4, color="tab:blue")
    bars.set_xticks(range(len(rows)), labels, fontsize=8)
    bars.set(title=f"{bar_metric.replace('_', ' ')} ({better} is better)", ylabel=bar_metric.replace("test_", ""))
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


def read_log(path: Path) -> list[dict]:
    """The lines of a train_log.jsonl; a cut-off last line (a run killed while writing) is skipped."""
    points = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            points.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return points


def smoothed(values: list[float], weight: float = 0.9) -> list[float]:
    """An exponential moving average, s_t = weight s_(t-1) + (1 - weight) x_t, started at x_0."""
    out = []
    for x in values:
        out.append(x if not out else weight * out[-1] + (1 - weight) * x)
    return out


def plot_curves(task, runs: list[dict], path: Path) -> None:
    """Training loss (smoothed) and the validation metric against the step, one line per run, one colour
    per method; masked LM's validation perplexity on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mlm = task.kind == "mlm"
    metric = "perplexity" if mlm else task.selection
    fig, (train_axis, validation_axis) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = {}
    for run in runs:
        log = Path(run.get("run_dir", "")) / "train_log.jsonl"
        if run["method"] == "base" or not log.is_file():
            continue
        points = read_log(log)
        colour = colours.setdefault(run["method"], f"C{len(colours)}")
        seed = run.get("hyperparameters", {}).get("seed", 0)
        label = f"{run['method']} (seed {seed})"
        train = [p for p in points if p["split"] == "train"]
        validation = [p for p in points if p["split"] == "validation"]
        train_axis.plot([p["step"] for p in train], smoothed([p["loss"] for p in train]), color=colour, label=label)
        validation_axis.plot([p["step"] for p in validation], [p[metric] for p in validation], marker="o",
                             color=colour, label=label)  # fmt: skip
    train_axis.set(title=f"{task.title}: training loss (smoothed)", xlabel="step", ylabel="loss")
    validation_axis.set(title=f"validation {metric}", xlabel="step", ylabel=metric)
    if mlm:
        validation_axis.set_yscale("log")
    for axis in (train_axis, validation_axis):
        if axis.lines:
            axis.legend(fontsize=8)
    fig.tight_layout()
    write_atomically(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
