"""Try a trained run on your own text.

    python predict.py runs/lora-sst2-bert-base-uncased "This is a great movie!" "A dull, lifeless film."
    python predict.py runs/lora-wikitext2-bert-base-uncased "The capital of France is [MASK]."

A classification run (SST-2, IMDB) prints each text's label and the probability of every label:
    softmax(logits) over the classes of the run's task.
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
    p.add_argument("texts", nargs="+", metavar="TEXT", help="texts to classify, or with [MASK] tokens to fill")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    return p.parse_args(argv)


@torch.no_grad()
def classify(model, tokenizer, texts: list[str], label_names: list[str], max_seq_len: int) -> list[str]:
    """One line per text: the predicted label, then every label's probability."""
    examples = data.encode_examples(texts, np.zeros(len(texts)), tokenizer, max_seq_len)
    batch = examples.batch(list(range(len(texts))), tokenizer.token_to_id("[PAD]"))  # padded to the longest
    device = next(model.parameters()).device
    logits = model(batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))  # (B, K)
    probs = logits.float().softmax(dim=-1).cpu()  # (B, K)
    lines = []
    for text, p in zip(texts, probs, strict=True):
        scores = ", ".join(f"{name} {q:.3f}" for name, q in zip(label_names, p.tolist(), strict=True))
        lines.append(f"{label_names[int(p.argmax())]:>10}  ({scores})  {text}")
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
        task = tasks.get(run["task"])
        if run["task"] == "wikitext2":
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
    if run["task"] == "wikitext2":
        lines = fill_masks(model, tokenizer, args.texts)
    else:
        lines = classify(model, tokenizer, args.texts, run["label_names"], run["hyperparameters"]["max_seq_len"])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
