"""Try a trained run on your own text.

    python predict.py runs/lora-sst2-bert-base-uncased "This is a great movie!" "A dull, lifeless film."
    python predict.py runs/lora-rte-bert-base-uncased "A man is sleeping. [SEP] Nobody sleeps."   # a pair
    python predict.py runs/lora-wikitext2-bert-base-uncased "The capital of France is [MASK]."

A classification run prints each text's label and the probability of every label:
    softmax(logits) over the classes of the run's task (the names it was trained with).
A regression run prints each text's score. A run trained on pairs takes each pair as one TEXT with the
two sides separated by " [SEP] ", as BERT itself sees them.
A masked-LM run (WikiText-2) fills each [MASK] of each text with its 5 most likely tokens:
    softmax(logits at the [MASK] position) over the vocabulary.
The model is the run's base model with the run's best adapter (and head) loaded, as evaluate.py builds it.
"""

import argparse
import sys

import numpy as np
import torch

import data
import minibert
import tasks
from train import USER_ERRORS
from training.runs import RunError, load_run_model, read_run

TOP_K = 5  # candidates shown for each [MASK]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished run directory written by train.py (it holds metrics.json)")
    p.add_argument(
        "texts",
        nargs="+",
        metavar="TEXT",
        help="texts to classify or score (a pair: 'first [SEP] second'), or with [MASK] tokens to fill",
    )
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    return p.parse_args(argv)


def split_pairs(texts: list[str], pairs: bool) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None): a pair run's TEXT is "first [SEP] second"."""
    if not pairs:
        return texts, None
    halves = [text.split(" [SEP] ", 1) for text in texts]
    single = [text for text, parts in zip(texts, halves, strict=True) if len(parts) != 2]
    if single:
        raise RunError(f"this run was trained on pairs of texts, and {single[0]!r} is one text; write each pair as "
                       '"first text [SEP] second text"')  # fmt: skip
    return [a for a, _ in halves], [b for _, b in halves]


@torch.no_grad()
def classify(model, tokenizer, texts: list[str], run: dict) -> list[str]:
    """One line per text: the predicted label and every label's probability (regression: the score)."""
    firsts, seconds = split_pairs(texts, run.get("text_pairs", False))
    examples = data.encode_examples(firsts, np.zeros(len(texts)), tokenizer, run["hyperparameters"]["max_seq_len"],
                                    pairs=seconds)  # fmt: skip
    batch = examples.batch(list(range(len(texts))), tokenizer.token_to_id("[PAD]"))  # padded to the longest
    device = next(model.parameters()).device
    segments = batch.get("token_type_ids") if model.config.type_vocab_size else None
    logits = (
        model(
            batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            token_type_ids=None if segments is None else segments.to(device),
        )
        .float()
        .cpu()
    )  # (B, K)
    if run.get("task_kind") == "regression":
        return [f"{score:>10.4f}  {text}" for text, score in zip(texts, logits[:, 0].tolist(), strict=True)]
    names = run["label_names"]
    lines = []
    for text, p in zip(texts, logits.softmax(dim=-1), strict=True):
        scores = ", ".join(f"{name} {q:.3f}" for name, q in zip(names, p.tolist(), strict=True))
        lines.append(f"{names[int(p.argmax())]:>10}  ({scores})  {text}")
    return lines


@torch.no_grad()
def fill_masks(model, tokenizer, texts: list[str]) -> list[str]:
    """For each text, each [MASK] with its TOP_K most likely tokens and their probabilities."""
    mask_id = tokenizer.token_to_id("[MASK]")
    device = next(model.parameters()).device
    lines = []
    for text in texts:
        ids = torch.tensor([tokenizer.encode(text).ids], device=device)  # (1, T): [CLS] ... [SEP]
        positions = (ids[0] == mask_id).nonzero().view(-1)  # (M,)
        logits = model(ids)[0, positions].float()  # (M, V)
        top = logits.softmax(dim=-1).topk(TOP_K, dim=-1)  # (M, k) probabilities and ids
        lines.append(text)
        for m, (p, i) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True), start=1):
            candidates = ", ".join(f"{tokenizer.id_to_token(t)} {q:.3f}" for t, q in zip(i, p, strict=True))
            lines.append(f"  [MASK] {m}: {candidates}")
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        run = read_run(args.run_dir)
        task = tasks.from_run(run)
        mlm = run.get("task_kind", "mlm" if run["task"] == "wikitext2" else "classification") == "mlm"
        if mlm:
            unmasked = [text for text in args.texts if "[MASK]" not in text]
            if unmasked:
                raise RunError(f"a masked-LM run fills [MASK] tokens, and {unmasked[0]!r} has none; "
                               'write e.g. "The capital of France is [MASK]."')  # fmt: skip
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = minibert.load_tokenizer(run["base_model"])
        model = load_run_model(task, run, device)
    except (RunError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        lines = fill_masks(model, tokenizer, args.texts) if mlm else classify(model, tokenizer, args.texts, run)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
