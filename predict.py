"""Use a trained run: a few texts on the command line, or a whole file.

    python predict.py runs/lora-sst2-bert-base-uncased "This is a great movie!" "A dull, lifeless film."
    python predict.py runs/lora-rte-bert-base-uncased "A man is sleeping. [SEP] Nobody sleeps."   # a pair
    python predict.py runs/lora-wikitext2-bert-base-uncased "The capital of France is [MASK]."
    python predict.py runs/lora-tickets-bert-base-uncased --file tickets.csv --output predictions.csv
    cat texts.txt | python predict.py runs/lora-sst2-bert-base-uncased --file - > predictions.jsonl

What a run predicts, for each text (the model is the run's base model with its best adapter and head,
as evaluate.py builds it):
  classification  the label (the names the run was trained with) and the probability of every label,
                  softmax(logits) over the classes
  regression      the score
  masked LM       for each [MASK], its 5 most likely tokens: softmax(logits at that position) over the vocabulary
A run trained on pairs takes a pair as one TEXT, "first [SEP] second", as BERT itself sees it; from a
table, the two columns it was trained with.

--file reads .txt (one text per line; a table when --text-column names a column), .csv, .tsv, .jsonl or
.parquet (data/tables.py), or - for standard input (one text per line); the text (and pair) columns
default to the run's, or --text-column and --text-pair-column. The output (--output, CSV or JSON Lines by
its extension; standard output as JSON Lines when left out) has one row per input row, in the input's
order: the input's own columns, unchanged,
then `prediction` (the label; the score; the top filler of each [MASK]), `probability` and one
`probability_<label>` per class (masked LM: `top5`). Texts are batched by length inside and put back in
order; the file is written whole or not at all (an existing file is replaced, and a line says so: the
rule of every script here). A row whose text is empty (or either text of a pair) is not scored, as
training skips such rows: its prediction is empty and a `note` column says why. An empty TEXT on the
command line is an error. Bad input: one line, exit 2, nothing written. TEXTs and flags may come in any
order.
"""

import argparse
import csv
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import data
import minibert
import tasks
from minibert.files import WriteError, write_text
from training.device import PRECISION_HELP, PRECISIONS, autocast, choose_device, choose_precision
from training.exits import USER_ERRORS
from training.flags import positive_int
from training.progress import Progress
from training.runs import RunError, load_run_model, read_run

TOP_K = 5  # candidates shown for each [MASK]
OUTPUTS = (".csv", ".jsonl")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run directory written by train.py (it holds metrics.json)")
    p.add_argument(
        "texts",
        nargs="*",
        metavar="TEXT",
        help="texts to classify or score (a pair: 'first [SEP] second'), or with [MASK] tokens to fill",
    )
    p.add_argument(
        "--file", default=None, help="predict every row of this file (.txt .csv .tsv .jsonl .parquet; -: stdin)"
    )
    p.add_argument("--output", default=None, help="where --file's predictions go (.csv or .jsonl; default stdout)")
    p.add_argument("--text-column", default=None, help="--file's text column (default: the run's)")
    p.add_argument("--text-pair-column", default=None, help="--file's pair column (default: the run's)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="texts per forward pass (default 64)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help=PRECISION_HELP,
    )
    return p.parse_intermixed_args(argv)  # TEXTs before or after the flags


def split_pairs(texts: list[str], where: list[str]) -> tuple[list[str], list[str]]:
    """(first texts, second texts) of "first [SEP] second" texts; `where` names each for an error."""
    halves = [text.split(" [SEP] ", 1) for text in texts]
    for parts, place in zip(halves, where, strict=True):
        if len(parts) != 2:
            raise RunError(f"{place}: this run was trained on pairs of texts, and {parts[0]!r} is one text; write "
                           'each pair as "first text [SEP] second text"')  # fmt: skip
    return [a for a, _ in halves], [b for _, b in halves]


def read_inputs(args, run: dict) -> tuple[list[dict], list[str], list[str] | None, list[str]]:
    """(the input rows, their first texts, second texts or None, where each row is): from the command line or
    --file (see the module doc)."""
    pairs = run.get("text_pairs", False)
    if args.file is None:
        rows, where = [{"text": text} for text in args.texts], [f"TEXT {i + 1}" for i in range(len(args.texts))]
        column, pair_column = "text", None
        empty = [place for place, text in zip(where, args.texts, strict=True) if not text.strip()]
        if empty:
            raise RunError(f"{empty[0]} is empty; give a text to predict")
    elif args.file == "-":
        lines = [line.rstrip("\r\n") for line in sys.stdin]
        rows = [{"text": line} for line in lines if line.strip()]
        where = [f"stdin line {i + 1}" for i, line in enumerate(lines) if line.strip()]
        column, pair_column = "text", None
    else:
        named = args.text_column is not None or args.text_pair_column is not None  # a .txt file is then a table
        table = data.read_table(args.file, txt_is_table=named)
        rows = [dict(zip(table.columns, values, strict=True)) for values in zip(*table.columns.values(), strict=True)]
        where = [f"{table.path}: {table.where(i)}" for i in range(len(table))]
        one_text = table.path.suffix.lower() in data.TEXT_FORMATS and not named
        column = "text" if one_text else args.text_column or run.get("text_column") or "text"
        pair_column = None if one_text else args.text_pair_column or run.get("text_pair_column")
        for name, flag in ((column, "--text-column"), (pair_column, "--text-pair-column")):
            if name is not None:
                table.column(name, flag)  # a missing column: one line naming the columns there are
    for name in ("prediction", "probability", "top5"):
        if rows and name in rows[0]:
            raise RunError(f"{args.file}: the input already has a column {name!r}, which the output adds; rename it")
    texts = ["" if row[column] is None else str(row[column]) for row in rows]
    if pairs and pair_column is None:
        firsts, seconds = split_pairs(texts, where)
    else:
        firsts = texts
        seconds = ["" if row[pair_column] is None else str(row[pair_column]) for row in rows] if pairs else None
    return rows, firsts, seconds, where


@torch.no_grad()
def predict(model, tokenizer, run: dict, firsts, seconds, where, batch_size: int, show_progress: bool,
            precision: str) -> list[dict]:  # fmt: skip
    """The output columns of each text (see the module doc), in the input's order; precision: "fp32" or
    "bf16" (training/device.py)."""
    kind, device = run["task_kind"], next(model.parameters()).device
    examples = data.encode_examples(firsts, np.zeros(len(firsts)), tokenizer, run["hyperparameters"]["max_seq_len"],
                                    pairs=seconds)  # fmt: skip
    mask_id, pad_id = tokenizer.token_to_id("[MASK]"), tokenizer.token_to_id("[PAD]")
    order = np.argsort(examples.lengths, kind="stable")  # batches of similar length: little padding
    results = [None] * len(firsts)
    progress = Progress(-(-len(order) // batch_size), 0, "predict", enabled=show_progress, unit="batch")
    began = time.perf_counter()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = {key: value.to(device) for key, value in examples.batch(rows, pad_id).items()}
        segments = batch.get("token_type_ids") if model.config.type_vocab_size else None
        with autocast(device, precision):
            if kind == "mlm":
                masked = batch["input_ids"] == mask_id  # (B, T)
                for i, row in enumerate(rows):
                    if not masked[i].any():
                        raise RunError(f"{where[row]}: a masked-LM run fills [MASK] tokens, and this text has none "
                                       "(within its first max_seq_len tokens); write e.g. "
                                       '"The capital of France is [MASK]."')  # fmt: skip
                labels = torch.where(masked, batch["input_ids"], data.IGNORE)
                logits = model.masked_logits(batch["input_ids"], labels, batch["attention_mask"]).float()  # (N, V)
            else:
                logits = model(batch["input_ids"], attention_mask=batch["attention_mask"], token_type_ids=segments)
        if kind == "mlm":
            top = logits.softmax(dim=-1).topk(TOP_K, dim=-1)  # (N, k) probabilities and ids, masks row-major
            counts = masked.sum(dim=1).tolist()
            values, ids = top.values.cpu().split(counts), top.indices.cpu().split(counts)
            for row, p, i in zip(rows, values, ids, strict=True):
                fillers = [[(tokenizer.id_to_token(t), q) for t, q in zip(tt, qq, strict=True)]
                           for tt, qq in zip(i.tolist(), p.tolist(), strict=True)]  # fmt: skip
                results[row] = {
                    "prediction": " ".join(mask[0][0] for mask in fillers),
                    "top5": " | ".join(", ".join(f"{t} {q:.3f}" for t, q in mask) for mask in fillers),
                }
        elif kind == "regression":
            for row, score in zip(rows, logits.float()[:, 0].tolist(), strict=True):
                results[row] = {"prediction": score}
        else:
            names = run["label_names"]
            for row, p in zip(rows, logits.float().softmax(dim=-1).tolist(), strict=True):
                best = int(np.argmax(p))
                results[row] = {"prediction": names[best], "probability": p[best]}
                results[row] |= {f"probability_{name}": q for name, q in zip(names, p, strict=True)}
        progress.update(rows_per_s=(start + len(rows)) / max(time.perf_counter() - began, 1e-9))
    progress.close()
    return results


def predict_non_empty(model, tokenizer, run: dict, firsts, seconds, where, args) -> list[dict]:
    """predict() on the rows that have a text; a row without one (either text of a pair) gets an empty
    prediction and a note, and the note column is added to every row when there is such a row."""
    has_text = [bool(a.strip()) and (seconds is None or bool(seconds[i].strip())) for i, a in enumerate(firsts)]
    keep = [i for i, ok in enumerate(has_text) if ok]
    pairs = None if seconds is None else [seconds[i] for i in keep]
    scored = predict(model, tokenizer, run, [firsts[i] for i in keep], pairs, [where[i] for i in keep],
                     args.batch_size, args.file is not None, args.precision) if keep else []  # fmt: skip
    if all(has_text):
        return scored
    columns = list(scored[0]) if scored else ["prediction"]  # an empty row has the same columns, empty
    empty = {**dict.fromkeys(columns), "note": "empty text: not scored"}
    results, scored = [], iter(scored)
    for ok in has_text:
        results.append({**next(scored), "note": ""} if ok else empty)
    return results


def lines_for_people(texts: list[str], results: list[dict], run: dict) -> list[str]:
    """The command line's answer: one line per text (masked LM: one per [MASK] after it)."""
    kind, lines = run["task_kind"], []
    for text, result in zip(texts, results, strict=True):
        if kind == "regression":
            lines.append(f"{result['prediction']:>10.4f}  {text}")
        elif kind == "mlm":
            lines.append(text)
            lines += [f"  [MASK] {m}: {top}" for m, top in enumerate(result["top5"].split(" | "), start=1)]
        else:
            scores = ", ".join(f"{name} {result[f'probability_{name}']:.3f}" for name in run["label_names"])
            lines.append(f"{result['prediction']:>10}  ({scores})  {text}")
    return lines


def table_text(rows: list[dict], suffix: str) -> str:
    """The rows as CSV (a header of the first row's columns) or as JSON Lines."""
    if suffix == ".csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else [], lineterminator="\n", restval="")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.texts and args.file is None:
        print("error: give TEXTs to predict, or --file PATH (- for standard input)", file=sys.stderr)
        return 2
    try:
        if args.texts and args.file is not None:
            raise RunError("give TEXTs or --file, not both")
        if args.output is not None and Path(args.output).suffix.lower() not in OUTPUTS:
            raise RunError(f"--output {args.output}: write predictions to a .csv or .jsonl file")
        run = read_run(args.run_dir)
        rows, firsts, seconds, where = read_inputs(args, run)
        device = choose_device(args.device)
        args.precision = choose_precision(args.precision, device)  # "fp32" or "bf16"
        tokenizer = minibert.load_tokenizer(run["base_model"])
        model = load_run_model(tasks.from_run(run), run, device)
        results = predict_non_empty(model, tokenizer, run, firsts, seconds, where, args)
        if args.file is None:
            print("\n".join(lines_for_people(args.texts, results, run)))
            return 0
        out = [row | result for row, result in zip(rows, results, strict=True)]  # the input's columns first
        if args.output is None:
            sys.stdout.write(table_text(out, ".jsonl"))
        else:
            replaced = " (it replaced the file there)" if Path(args.output).exists() else ""
            write_text(args.output, table_text(out, Path(args.output).suffix.lower()))
            print(f"{len(out)} predictions written to {args.output}{replaced}", file=sys.stderr)
    except (RunError, WriteError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
