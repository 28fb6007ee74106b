"""PEFT's AdaLoRA, the reference Sparse LoRA is compared with at an equal rank budget: transformers'
BertForSequenceClassification with PEFT's AdaLoRA, trained on our task's own batches with train.py's
schedule, so that only the method differs.

    python -m tests.benchmarks.adalora --budget 64 <train.py's flags: --model, --task or --train-file, ...>

AdaLoRA (Zhang et al., ICLR 2023) writes each update in SVD form, ΔW = B diag(E) A (Section 3.1), and
every `deltaT` steps zeroes the entries of E whose importance is lowest (Section 3.2: an EMA of |w ∇w|
times its uncertainty) until the total rank left is the budget. The budget falls from init_r per module
to the target on a cubic schedule (Section 3.3). The masks are recomputed each time, so a cut rank can
come back.

The same run as `train.py --method lora` with the same flags, but for the method:
  - the same batches (task.train_batch), learning rate (train.learning_rate: warm-up, then linear decay),
    AdamW weight decay, clipping at 1.0, dropout seeds, r = init_r, alpha, dropout and target modules;
  - the same checkpoint choice, validation every --eval-every steps and the best one restored for the
    test, among the states within the budget (the final phase), so that the budget asked for is scored;
  - AdaLoRA's schedule, scaled from the paper's GLUE scripts (about a tenth of training dense, the budget
    cut over the next ~45%, fixed for the rest): nothing is cut during the warm-up (tinit; the paper waits
    6 warm-ups, which a run of a few hundred steps cannot), the budget falls over half of the remaining
    steps, and stays at the target for the other half (tfinal);
  - `--budget` is the total rank left at the end, over all modules (our Sparse LoRA run's sum of
    effective ranks). PEFT's `target_r` is a per-module integer; the allocator's total (target_bgt) is
    set to the budget itself, so that a non-integer average is matched exactly.
  - PEFT's own defaults otherwise: orthogonality regulariser 0.5, β1 = β2 = 0.85.

Writes metrics.json in --output-dir (test metrics, the final rank of each module, the budget, the train
time). Used by tests/benchmarks/real_encoder.py; a test-only reference, never imported by the product.
"""

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import peft
import torch
import transformers

import data
import minibert
import train
from minibert.files import write_text
from training import cli
from training.report import improves

CPU = torch.device("cpu")  # this benchmark runs where our CPU runs do


class Logits(torch.nn.Module):
    """transformers' classifier seen through our tasks' interface: model(ids, attention_mask=, token_type_ids=)
    -> logits (B, K), so that task.evaluate scores it with the same code as our runs."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config  # task.logits reads config.type_vocab_size

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits


def ranks(model) -> list[dict]:
    """The non-zero entries of E per module, in our modules' names and order (layers.{i}.attention.query)."""
    found = []
    for name, p in model.named_parameters():
        match = re.search(r"layer\.(\d+)\.attention\.self\.(\w+)\.lora_E", name)
        if match:
            found.append({"module": f"layers.{match[1]}.attention.{match[2]}", "rank": int((p != 0).sum())})
    return found


def say(line: str) -> None:
    print(line, file=sys.stderr)


def run(budget: int, args) -> dict:
    torch.manual_seed(args.seed)
    cli.method_flags(args, say)  # LoRA's defaults for --r, --alpha, --dropout when left out
    task = cli.build_task(args, say)
    args.max_seq_len = args.max_seq_len or task.default_max_seq_len
    cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
    task.load_data(minibert.load_tokenizer(args.model), args.data_dir, cache_dir, args.max_seq_len)
    args.lr = args.lr or cli.DEFAULT_LR
    steps_per_epoch = task.batches_per_epoch(args.batch_size)
    total = min(args.epochs * steps_per_epoch, args.max_steps or math.inf)
    tinit = min(args.warmup_steps, total // 3)  # nothing cut in the warm-up (a very short run: its first third)
    tfinal = (total - tinit) // 2
    base = transformers.BertForSequenceClassification.from_pretrained(args.model, num_labels=task.num_labels)
    targets = args.target_modules.split(",") if args.target_modules else ["query", "value"]
    config = peft.AdaLoraConfig(
        task_type="SEQ_CLS", init_r=args.r, target_r=max(1, round(budget / (2 * base.config.num_hidden_layers))),
        lora_alpha=args.alpha, lora_dropout=args.dropout, target_modules=targets,
        tinit=tinit, tfinal=tfinal, deltaT=10, total_step=total,
    )  # fmt: skip
    model = peft.get_peft_model(base, config)
    if not 0 <= budget < model.base_model.rankallocator.init_bgt:
        raise SystemExit(f"--budget {budget}: give 0 to {model.base_model.rankallocator.init_bgt - 1} (fewer ranks "
                         f"than the {args.r} x modules AdaLoRA starts with)")  # fmt: skip
    model.base_model.rankallocator.target_bgt = budget  # the exact total, not target_r x modules
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    scored = Logits(model)
    best, best_state, train_time = None, None, 0.0
    model.train()
    for step in range(total):
        start = time.perf_counter()
        torch.manual_seed(data.seed_of(args.seed, step, 0))  # dropout, as train.py seeds it
        batch = task.train_batch(args.seed, *divmod(step, steps_per_epoch), args.batch_size)
        for group in optimizer.param_groups:
            group["lr"] = train.learning_rate(step, args.lr, args.warmup_steps, total)
        loss = model(**batch).loss  # cross-entropy + AdaLoRA's orthogonality regulariser on A and B
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        model.base_model.update_and_allocate(step)  # importance from this step's gradients, then the masks
        optimizer.zero_grad(set_to_none=True)
        train_time += time.perf_counter() - start
        if (step + 1) % args.log_every == 0:
            total_rank = sum(r["rank"] for r in ranks(model))
            say(f"AdaLoRA step {step + 1}/{total}: loss {loss.item():.4f}, total rank {total_rank}")
        if (args.eval_every and (step + 1) % args.eval_every == 0) or step + 1 == total:
            result = task.evaluate(scored, "validation", args.eval_batch_size, CPU, "fp32")
            at_budget = step + 1 > total - tfinal  # only a state within the budget can be the one scored
            if at_budget and improves(result, best or {}, task):
                best = {"step": step + 1, **result}
                best_state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            say(f"AdaLoRA step {step + 1}: validation {task.describe(result)}")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(best_state[n])
    test = {split: task.evaluate(scored, split, args.eval_batch_size, CPU, "fp32") for split in task.test_splits}
    module_ranks = ranks(model)
    return {
        "method": "adalora",
        "budget": budget,
        "total_rank": sum(r["rank"] for r in module_ranks),
        "ranks": module_ranks,
        "schedule": {"total_step": total, "tinit": tinit, "tfinal": tfinal, "deltaT": 10},
        "steps": total,
        "best_step": best["step"],
        "trainable_params": sum(p.numel() for p in params),
        "train_time_s": train_time,
        **{f"validation_{k}": v for k, v in best.items() if k != "step"},
        **{f"test_{k}": v for k, v in test.get("test", {}).items()},
        "hyperparameters": {"lr": args.lr, "r": args.r, "alpha": args.alpha, "batch_size": args.batch_size},
        "peft": peft.__version__,
        "transformers": transformers.__version__,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, required=True, help="total rank left at the end, over all modules")
    ours, rest = p.parse_known_args(argv)
    # AdaLoRA is LoRA in SVD form: train.py's LoRA flags (--r, --alpha, --dropout, ...) mean the same here
    args = cli.parse_args(["--method", "lora", *rest])
    metrics = run(ours.budget, args)
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    print(f"AdaLoRA: test {metrics.get('test_accuracy')}, total rank {metrics['total_rank']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
