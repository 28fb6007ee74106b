"""Fine-tune BERT or DistilBERT with one PEFT method: masked language modelling (WikiText-2 or your text),
or classification and regression (SST-2, IMDB, GLUE, or your CSV/TSV/JSONL/parquet files).

    python train.py --method sparse_lora                      # WikiText-2 MLM, bert-base-uncased, the defaults
    python train.py --task sst2 --method lora                 # SST-2 classification
    python train.py --task rte --method hira                  # a GLUE task by name (cola, mrpc, qqp, stsb, mnli, ...)
    python train.py --method lora --train-file tickets.csv --test-file tickets-test.csv   # your files
    python train.py --task sst2 --method head                 # baseline: only the classification head
    python train.py --task sst2 --method full                 # reference: every weight (lr 2e-5)
    torchrun --nproc_per_node 4 train.py --method hira        # data-parallel, the same script

It writes to --output-dir (default runs/<method>-<task>-<model>):
    adapter_config.json, adapter_model.safetensors   the best adapter (PEFT format; a classifier's head
                        included), or head_model.safetensors for --method head, or for --method full
                        the whole model: config.json, model.safetensors and the tokenizer (transformers')
    metrics.json        every measured number        train_log.jsonl   one line per logged step
    README.md           a model card with the measured values
    checkpoints/        the latest checkpoints, for --resume

The file reads top to bottom: set-up (`fine_tune`), the loop (`train`), the end (`finish`). The loop is the same
for every task and method: tasks/ holds what differs between tasks (data, loss, metrics), and a method's
own work around the optimizer step (Sparse LoRA's gates) comes through methods/hooks.py. The command line,
the exit codes (0 done, 2 a mistake, 3 NaN, 4 a file not written, 130 interrupted), resuming and data
parallelism are in training/.
"""

import contextlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

import data
import methods
import minibert
from minibert.files import append_line, sync_log, write_text
from minibert.save import save_model_directory
from training import cli
from training import distributed as ddp
from training.card import model_card
from training.checkpoints import load_checkpoint, run_identity, save_checkpoint, trim_log
from training.device import autocast, choose_precision, elapsed
from training.exits import UsageError, diverged, exit_code
from training.folder import RunFolder, output_dir, refuse_a_run_there
from training.progress import Progress
from training.report import RunState, final_metrics


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at step `total` (0-based step)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


@dataclass
class Run:
    """What the loop and the functions beside it share; set up once, in `fine_tune`."""

    args: object  # the command line, every default filled in (training/cli.py)
    task: object  # what is learned: the data, the loss, the metrics (tasks/)
    model: torch.nn.Module  # the base model with the task's head and the method put in
    hooks: methods.hooks.TrainingHooks  # what the method adds around the optimizer step (methods/hooks.py)
    optimizer: torch.optim.Optimizer  # AdamW over what trains
    state: RunState  # what changes from step to step; every checkpoint keeps it
    out_dir: Path  # where the run writes
    rank: int  # this process (0: the one that validates and writes)
    world: int  # how many processes train together (torchrun)
    device: torch.device  # where this process computes
    steps_per_epoch: int  # optimizer steps in one pass over the training split
    total_steps: int  # optimizer steps in the whole run


def main(argv=None) -> int:
    return exit_code(fine_tune, cli.parse_args(argv, __doc__))


def fine_tune(args) -> int:
    """Set-up: processes, task, model and method, optimizer (and a checkpoint to resume); the loop; the end."""
    rank, world, device = ddp.setup_distributed(args.device)
    args.precision = choose_precision(args.precision, device)  # "fp32" or "bf16"
    say = (lambda line: print(line, file=sys.stderr)) if rank == 0 else (lambda line: None)
    torch.manual_seed(args.seed)  # adapter initialisation and dropout
    cli.method_flags(args, say)
    args.model = cli.model_reference(args.model)
    task = cli.build_task(args, say)
    out_dir = output_dir(args, task)
    with RunFolder(out_dir) if rank == 0 else contextlib.nullcontext():  # locked: one training at a time
        refuse_a_run_there(out_dir, args.resume)
        model = load_model_and_data(args, task, device, say)
        steps_per_epoch = task.batches_per_epoch(args.batch_size * world)
        if steps_per_epoch == 0:
            raise UsageError(f"the training split is smaller than one batch of {args.batch_size * world}")
        total_steps = min(args.epochs * steps_per_epoch, args.max_steps or math.inf)
        cli.fit_warmup(args, total_steps, say)
        hooks = methods.training_hooks(args.method, args.warmup_steps, total_steps, cli.sparsify(args, total_steps))
        # fused: each parameter's update in one pass (the same numbers to ~1e-7; a full fine-tuning step ~15% faster)
        optimizer = torch.optim.AdamW(hooks.param_groups(model, args.weight_decay), lr=args.lr, fused=True)
        state = RunState()
        if args.resume:
            saved, best_state = load_checkpoint(out_dir, model, optimizer, run_identity(args, task, world), say)
            state = RunState.restored(saved, best_state)
            hooks.load_state_dict(saved.get("method_state", saved))  # older checkpoints: Sparse LoRA's at the top
            if rank == 0:
                trim_log(out_dir / "train_log.jsonl", state.step)
            say(f"resumed from step {state.step}")
        run = Run(
            args, task, model, hooks, optimizer, state, out_dir, rank, world, device, steps_per_epoch, total_steps
        )
        progress = Progress(total_steps, state.step, f"{args.method} {task.name}", enabled=rank == 0)
        try:
            train(run, progress)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM in the loop: a checkpoint to continue from
            checkpoint(run)
            say(f"interrupted at step {state.step}: checkpoint saved; continue with the same command plus --resume")
            return 130
        except FloatingPointError as e:  # the loss or a gradient became NaN or infinite
            return diverged(e, out_dir)
        if rank == 0:
            finish(run, progress)
        ddp.leave_together(model, world)
        return 0


def load_model_and_data(args, task, device, say):
    """The base model with the task's head (bf16 for QLoRA on CUDA), the data tokenised (what was skipped
    said in a line), the method put in."""
    tokenizer = minibert.load_tokenizer(args.model)
    qlora_on_cuda = args.method in methods.QUANTISED and device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:  # a new head's warning: one plain line, below
        warnings.simplefilter("always")
        model = task.load_model(args.model, dtype=torch.bfloat16 if qlora_on_cuda else None, device=device)
    for warning in caught:
        say(f"note: {warning.message}")
    cli.fill_defaults(args, task)
    cli.check_args(args, model.config)
    cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
    task.load_data(tokenizer, args.data_dir, cache_dir, args.max_seq_len)
    for line in task.notices():
        say(line)
    cli.say_columns(args, task, say)
    targets = args.target_modules.split(",") if args.target_modules else None
    methods.apply(model, args.method, r=args.r, alpha=args.alpha, dropout=args.dropout, target_modules=targets,
                  **cli.method_options(args))  # fmt: skip
    return model.train()


def train(run: Run, progress: Progress) -> None:
    """The loop: forward, loss, backward, clip, step, the method's hook, log, validate, save."""
    args, model, task, optimizer, state = run.args, run.model, run.task, run.optimizer, run.state
    trained = [p for p in model.parameters() if p.requires_grad]
    objective = ddp.wrap_objective(ddp.Objective(model, task), args.compile, run.world, run.device)
    try:
        while state.step < run.total_steps:
            step, start = state.step, time.perf_counter()
            torch.manual_seed(data.seed_of(args.seed, step, run.rank))  # dropout: a pure function of the step
            epoch, index = divmod(step, run.steps_per_epoch)
            batch = task.train_batch(args.seed, epoch, index, args.batch_size * run.world)  # the same on every process
            mine, share = ddp.share_of_batch(batch, task, args.batch_size, run.rank, run.world, run.device)
            lr = learning_rate(step, args.lr, args.warmup_steps, run.total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]  # a group of a method's own may learn faster (its hooks)

            with autocast(run.device, args.precision):
                loss = objective(mine) * share  # task.loss(model, mine), inside a module so that DDP can hook it
            loss = loss + run.hooks.loss_term(model) * share  # the method's own term, if it has one
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(trained, 1.0)
            loss = ddp.global_loss(loss, grad_norm, step, run.world)  # the mean over the processes; NaN stops the run
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            note = run.hooks.after_step(model, optimizer, step, loss)  # the method's own step, if it has one
            if note:
                progress.write(note)

            state.step = step = step + 1
            state.took(elapsed(start, run.device), samples=len(batch["input_ids"]), tokens=task.tokens(batch))
            log(run, progress, loss, lr, grad_norm)
            if run.rank == 0 and args.eval_every and step % args.eval_every == 0:
                validate(run, progress)
            if args.save_every and step % args.save_every == 0:
                checkpoint(run)
            if out_of_patience(run):
                progress.write(f"step {step}: {args.patience} validations without a better one; stopping early")
                state.stopped_early = True
                break
    finally:
        progress.close()


def log(run: Run, progress: Progress, loss: float, lr: float, grad_norm: torch.Tensor) -> None:
    """The progress line every step; a line of train_log.jsonl every --log-every steps (and the last)."""
    step, tokens_per_s = run.state.step, run.state.tokens_seen / max(run.state.train_time, 1e-9)
    progress.update(loss=loss, lr=lr, tokens_per_s=tokens_per_s)
    if run.rank == 0 and (step % run.args.log_every == 0 or step == run.total_steps):
        line = {"step": step, "split": "train", "loss": loss, "lr": lr, "grad_norm": grad_norm.item(),
                "tokens_per_s": tokens_per_s}  # fmt: skip
        append_line(run.out_dir / "train_log.jsonl", json.dumps(line | run.hooks.log(run.model)))


def validate(run: Run, progress: Progress) -> None:
    """Score the validation split; keep (and save) the model if it is the best so far."""
    args, state, task = run.args, run.state, run.task
    start = time.perf_counter()
    result = task.evaluate(run.model, "validation", args.eval_batch_size, run.device, args.precision)
    state.eval_time += time.perf_counter() - start
    if state.validated(result, task, counts=state.step > args.patience_from):
        state.best_state = {n: p.detach().cpu().clone() for n, p in run.model.named_parameters() if p.requires_grad}
        save_model(run)
    best = " (best)" if state.best["step"] == state.step else ""
    progress.write(f"step {state.step}: validation {task.describe(result)}{best}")
    line = {"step": state.step, "split": "validation", **result} | run.hooks.log(run.model)  # e.g. the kept ranks
    append_line(run.out_dir / "train_log.jsonl", json.dumps(line))


def out_of_patience(run: Run) -> bool:
    """--patience: the last `patience` validations (after --patience-from) did not beat the best. Only the
    main process validates, so it decides for all. The last step's validation never stops a run early."""
    args, step = run.args, run.state.step
    at_eval = args.eval_every and step % args.eval_every == 0 and step < run.total_steps
    return bool(args.patience and at_eval) and ddp.any_process(run.state.stale_validations >= args.patience, run.world)


def checkpoint(run: Run) -> None:
    """Everything --resume needs to go on exactly: weights, AdamW's moments, the run's state, the method's."""
    if run.rank == 0:
        sync_log(run.out_dir / "train_log.jsonl")  # the log's lines up to this checkpoint, on disk with it
        run_state = {"run": run_identity(run.args, run.task, run.world), "epoch": run.state.step // run.steps_per_epoch,
                     **run.state.saved(), "method_state": run.hooks.state_dict()}  # fmt: skip
        save_checkpoint(run.out_dir, run.model, run.optimizer, run_state, run.state.best_state,
                        keep=run.args.keep_checkpoints)  # fmt: skip


def save_model(run: Run) -> None:
    """The adapter (PEFT's files), or for full fine-tuning the whole model: a transformers checkpoint."""
    if run.args.method == "full":
        save_model_directory(run.model, run.out_dir, run.args.model, run.task.label_names)
    else:
        methods.save_adapter(run.model, run.out_dir)


def finish(run: Run, progress: Progress) -> None:
    """Validate the last step, restore the best adapter and save it, score it on the test split(s), write
    metrics.json and the card."""
    args, model, task, state = run.args, run.model, run.task, run.state
    if state.last_validated != state.step:
        validate(run, progress)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(state.best_state[n])
    save_model(run)  # the best adapter, whichever checkpoint the run resumed from
    start = time.perf_counter()
    tested = {s: task.evaluate(model, s, args.eval_batch_size, run.device, args.precision) for s in task.test_splits}
    state.eval_time += time.perf_counter() - start
    metrics = final_metrics(args, task, model, state, tested, run.device, run.world) | run.hooks.report(model)
    write_text(run.out_dir / "README.md", model_card(metrics))
    write_text(run.out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # last: it marks the run finished
    if summary := run.hooks.summary(model, metrics):  # the method's own account, if it has one
        print(summary, file=sys.stderr)
    scored = "; ".join(f"{split} {task.describe(result)}" for split, result in tested.items())
    print(f"{scored or 'no test file: no test metrics'}; results in {run.out_dir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
