"""Score every finished run on the WikiText-2 test split, side by side, with the base model as the first row.

    python evaluate.py                          # every finished run under runs/
    python evaluate.py runs/lora-bert-base-uncased runs/hira-bert-base-uncased --pseudo-perplexity 50

For each base model the row "base" is the model without any adapter, so the effect of fine-tuning is
visible. Every row is scored on the same blocks with the same fixed masks (data/masking.py):
    perplexity  = exp(mean cross-entropy over the masked tokens)
    accuracy    = top-1 (and top-5) prediction of the masked tokens
    --pseudo-perplexity N: mask one token at a time over the first N test blocks (Salazar, Liang,
                Nguyen, Kirchhoff, "Masked Language Model Scoring", ACL 2020, Section 2.3):
                PPPL = exp(-mean over tokens t of log p(w_t | all other tokens)); independent of masks.
Inference throughput (samples/s after warm-up) and peak memory are measured for each row in its own
process, so that one row's memory does not count in the next one's.

Writes results/comparison.md, results/comparison.csv and results/comparison.png.
"""

import argparse
import csv
import json
import math
import multiprocessing
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import data
import methods
import minibert
import quant
from methods.qlora import quantize_linears
from train import USER_ERRORS, bf16_autocast, evaluate_mlm, load_blocks, peak_memory

COLUMNS = [
    ("method", "method"),
    ("base_model", "base model"),
    ("trainable_params", "trainable params"),
    ("trainable_percent", "trainable %"),
    ("model_size_mb", "size MB"),
    ("test_perplexity", "test perplexity"),
    ("test_accuracy", "accuracy"),
    ("test_top5_accuracy", "top-5 accuracy"),
    ("pseudo_perplexity", "pseudo-perplexity"),
    ("train_time_s", "train time s"),
    ("train_samples_per_s", "train samples/s"),
    ("inference_samples_per_s", "inference samples/s"),
    ("peak_memory_mb", "peak memory MB"),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories (default: every finished run under --runs-dir)")
    p.add_argument("--runs-dir", default="runs", help="where train.py wrote its runs (default runs)")
    p.add_argument("--data-dir", default=None, help="WikiText-2 files, as for train.py (default: the hub)")
    p.add_argument("--output-dir", default="results", help="where the table and plot go (default results)")
    p.add_argument("--batch-size", type=int, default=64, help="blocks per evaluation batch (default 64)")
    p.add_argument("--throughput-batch-size", type=int, default=32, help="batch for inference timing (default 32)")
    p.add_argument("--pseudo-perplexity", type=int, default=0, metavar="N", help="also PPPL on the first N test blocks")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    p.add_argument("--cache-dir", default=None, help="cache of tokenised blocks (default ~/.cache/minibert-peft)")
    return p.parse_args(argv)


def find_runs(args) -> list[dict]:
    """metrics.json of every finished run (given, or found under --runs-dir)."""
    candidates = [Path(r) for r in args.runs] or sorted(p.parent for p in Path(args.runs_dir).glob("*/metrics.json"))
    runs = []
    for run_dir in candidates:
        path = run_dir / "metrics.json"
        if not path.is_file():
            raise data.DataError(f"{run_dir}: not a finished run (no metrics.json)")
        metrics = json.loads(path.read_text())
        if metrics.get("finished"):
            runs.append({**metrics, "run_dir": str(run_dir)})
    if not runs:
        raise data.DataError(
            f"no finished runs in {args.runs_dir}/ (a finished run has metrics.json); train one first, "
            "e.g. python train.py --method lora"
        )
    return runs


def build_model(row: dict, device):
    """The base model, quantised for a QLoRA run, with the run's adapter loaded (none for the base row)."""
    model = minibert.from_pretrained(row["base_model"], device=device)
    if row["method"] == "qlora":
        h = row["hyperparameters"]
        quantize_linears(model, blocksize=h["blocksize"], double_quant=not h["no_double_quant"])
    if row["method"] != "base":
        methods.load_adapter(model, row["run_dir"])
    return model.eval()


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
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    tokenizer = minibert.load_tokenizer(row["base_model"])
    run_args = argparse.Namespace(data_dir=args.data_dir, cache_dir=args.cache_dir, max_seq_len=row["max_seq_len"])
    test_blocks = load_blocks(run_args, tokenizer, splits=("test",))["test"]
    vocab = data.MaskingVocab.from_tokenizer(tokenizer)
    model = build_model(row, device)
    result = evaluate_mlm(model, data.eval_masks(test_blocks, vocab), args.batch_size, device, top_k=5)
    measured = {
        "test_loss": result["loss"],
        "test_perplexity": result["perplexity"],
        "test_accuracy": result["accuracy"],
        "test_top5_accuracy": result["top5_accuracy"],
        "model_size_mb": quant.model_bytes(model) / 1e6,
    }
    if args.pseudo_perplexity:
        measured["pseudo_perplexity"] = pseudo_perplexity(
            model, test_blocks[: args.pseudo_perplexity], vocab, device, args.batch_size
        )
    # Inference throughput: forward passes over batches of test blocks, after two warm-up batches.
    batch = data.eval_masks(test_blocks[: args.throughput_batch_size], vocab)
    ids, labels = batch["input_ids"].to(device), batch["labels"].to(device)
    timings = []
    with torch.no_grad(), bf16_autocast(device):
        for i in range(12):
            start = time.perf_counter()
            model.masked_logits(ids, labels)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= 2:
                timings.append(time.perf_counter() - start)
    measured["inference_samples_per_s"] = len(ids) / (sum(timings) / len(timings))
    measured.update(peak_memory(device))
    return measured


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        runs = find_runs(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for base in dict.fromkeys(r["base_model"] for r in runs):  # one "base" row per base model, first
        first = next(r for r in runs if r["base_model"] == base)
        rows.append(
            {
                "method": "base",
                "base_model": base,
                "max_seq_len": first["hyperparameters"]["max_seq_len"],
                "trainable_params": 0,
                "trainable_percent": 0.0,
                "total_params": first["total_params"] - first["trainable_params"],
            }
        )
        for run in runs:
            if run["base_model"] == base:
                rows.append({**run, "max_seq_len": run["hyperparameters"]["max_seq_len"]})
    context = multiprocessing.get_context("spawn")  # a fresh process per row: clean memory measurements
    for row in rows:
        label = row["method"] if row["method"] == "base" else row["run_dir"]
        print(f"evaluating {label} ...", file=sys.stderr)
        with context.Pool(1) as pool:
            try:
                row.update(pool.apply(evaluate_row, (row, vars(args))))
            except USER_ERRORS as e:
                print(f"error: {label}: {e}", file=sys.stderr)
                return 2
    write_results(rows, Path(args.output_dir))
    return 0


def cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def write_results(rows: list[dict], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = [(key, title) for key, title in COLUMNS if any(row.get(key) is not None for row in rows)]
    lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in columns) + " |" for row in rows]
    table = "\n".join(lines) + "\n"
    note = (
        "\nTest split of WikiText-2, the same fixed masks for every row; perplexity = exp(mean masked-token "
        "cross-entropy). Training columns come from each run's metrics.json; inference and memory were "
        f"measured now, each row in its own process (memory: {rows[0].get('peak_memory_kind', '')}).\n"
    )
    (out_dir / "comparison.md").write_text(table + note, encoding="utf-8")
    with (out_dir / "comparison.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([key for key, _ in columns])
        writer.writerows([[row.get(key) for key, _ in columns] for row in rows])
    plot(rows, out_dir / "comparison.png")
    print(table)
    print(f"written: {out_dir / 'comparison.md'}, {out_dir / 'comparison.csv'}, {out_dir / 'comparison.png'}")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig, (curves, bars) = plt.subplots(1, 2, figsize=(12, 4.5))
    for row in rows:
        log = Path(row.get("run_dir", "")) / "train_log.jsonl"
        if row["method"] != "base" and log.is_file():
            points = [json.loads(line) for line in log.read_text().splitlines()]
            points = [p for p in points if p["split"] == "validation"]
            curves.plot([p["step"] for p in points], [p["loss"] for p in points], marker="o", label=row["method"])
    curves.set(title="validation loss (masked tokens)", xlabel="step", ylabel="cross-entropy")
    curves.legend()
    labels = [f"{r['method']}\n{r['trainable_params']:,} trainable" for r in rows]
    bars.bar(range(len(rows)), [r["test_perplexity"] for r in rows], color="tab:blue")
    bars.set_xticks(range(len(rows)), labels, fontsize=8)
    bars.set(title="test perplexity (lower is better)", ylabel="perplexity")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
