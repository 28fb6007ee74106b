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

The loop, the same for every task (tasks/ holds what differs: data, objective, metrics): load the model
with the task's head and the data; put the method in; then for every step take the task's batch, compute
its loss, backpropagate into the adapters (and the task head), clip, step AdamW and the learning-rate
schedule (and SoRA's proximal step); evaluate on the validation split every --eval-every steps, keeping
the best adapter (lowest validation loss for MLM, the task's first metric for the others); checkpoint
every --save-every steps. At the end the best adapter is scored on the test split(s).

Exit codes: 0 done; 2 a usage or input mistake (one line on stderr); 3 the loss became NaN or infinite;
4 a file could not be written (disk full, no permission, read-only): the line names the file and the last
good checkpoint, and --resume continues from it once the cause is fixed; 130 interrupted (Ctrl-C or
SIGTERM) at any moment: in the loop a checkpoint is saved to --resume from; before or after it, one line
says so. Every file is written atomically (complete or absent), metrics.json last.
"""

import argparse
import contextlib
import dataclasses
import json
import math
import signal
import sys
import time
import warnings
from pathlib import Path

import torch

import data
import methods
import minibert
import quant
import tasks
from minibert.files import WriteError, append_line, sync_log, write_text
from minibert.save import save_model_directory
from training.card import model_card
from training.checkpoints import ResumeError, latest_intact, load_checkpoint, save_checkpoint, trim_log
from training.device import PRECISION_HELP, PRECISIONS, DeviceError, autocast, choose_precision
from training.distributed import all_reduce_sum, leave_together, setup_distributed
from training.flags import non_negative_float, non_negative_int, positive_float, positive_int, probability
from training.folder import FolderError, RunFolder
from training.progress import Progress
from training.report import RunState, final_metrics

DEFAULT_LR = 3e-4  # peak AdamW learning rate of every method but HiRA and full fine-tuning (their DEFAULT_LR)
METHOD_LR = {"hira": methods.hira.DEFAULT_LR, "full": methods.full.DEFAULT_LR}
ADAPTERS = tuple(name for name, wrapper in methods.METHODS.items() if wrapper is not None)
METHOD_FLAGS = {  # flags that only some methods use: name -> (default, the methods that use it)
    "r": (8, ADAPTERS),
    "alpha": (16.0, tuple(name for name in ADAPTERS if name != "hira")),  # HiRA has no scaling
    "dropout": (0.1, ADAPTERS),
    "target_modules": (None, ADAPTERS),
    "sparse_lambda": (methods.sora.DEFAULT_SPARSE_LAMBDA, ("sparse_lora",)),
    "blocksize": (64, methods.QUANTISED),
    "no_double_quant": (False, methods.QUANTISED),
}
USER_ERRORS = (minibert.LoadError, methods.AdapterError, data.DataError, quant.QuantError, ResumeError, DeviceError,
               FolderError)  # fmt: skip
FILE_FLAGS = ("validation_file", "test_file", "text_column", "text_pair_column", "label_column")


class UsageError(Exception):
    """A bad command line or output directory; printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--method",
        required=True,
        choices=list(methods.METHODS),
        help="the PEFT method to train; 'head' trains only a classifier's head (a baseline), 'full' every weight "
        "(the reference); qdora is DoRA on the 4-bit base of qlora",
    )
    p.add_argument(
        "--task",
        default=None,
        choices=[*tasks.TASKS, *tasks.KINDS],
        help="wikitext2: masked LM on WikiText-2 (the default); sst2, imdb: sentiment; cola, mrpc, qqp, stsb, mnli, "
        "qnli, rte: GLUE. With --train-file: classification, regression or mlm (default: inferred from the file)",
    )
    p.add_argument(
        "--train-file",
        default=None,
        help="your training data: .csv, .tsv, .jsonl, .parquet; .txt, .raw, .tokens: text for mlm (a .txt with "
        "column flags or --task classification/regression is a table, tab- or comma-separated)",
    )
    p.add_argument("--validation-file", default=None, help="your validation data (default: a fixed 10%% of train)")
    p.add_argument("--test-file", default=None, help="your test data (default: none, no test metrics)")
    p.add_argument("--text-column", default=None, help="column of the text (default: sentence, text, sentence1, ...)")
    p.add_argument("--text-pair-column", default=None, help="column of a pair's second text (default: sentence2, ...)")
    p.add_argument("--label-column", default=None, help="column of the label (default: label, else score)")
    p.add_argument("--model", default="bert-base-uncased", help="hub repo id or local directory of a BERT/DistilBERT")
    p.add_argument(
        "--data-dir",
        default=None,
        help="the task's files (the hub's parquet files; for WikiText-2 also wiki.*.raw); default: the hub",
    )
    p.add_argument(
        "--output-dir", default=None, help="where results go (default runs/<method>-<task>-<model>[-seed<N>])"
    )
    p.add_argument("--epochs", type=positive_int, default=3, help="passes over the training split (default 3)")
    p.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many optimizer steps")
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="blocks or examples per step and process (default 16)"
    )
    p.add_argument(
        "--max-seq-len",
        type=positive_int,
        default=None,
        help="tokens per block or example, [CLS] and [SEP]s included (default 128; imdb 512)",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help=f"peak learning rate of AdamW (default {DEFAULT_LR}; hira {methods.hira.DEFAULT_LR}: its update W0 ⊙ BA "
        f"is scaled by W0's small entries, see methods/hira.py; full {methods.full.DEFAULT_LR}, as BERT's paper)",
    )
    p.add_argument(
        "--weight-decay", type=non_negative_float, default=0.01, help="AdamW weight decay (not on SoRA gates)"
    )
    p.add_argument(
        "--warmup-steps", type=non_negative_int, default=100, help="linear warm-up steps before linear decay"
    )
    p.add_argument("--r", type=positive_int, default=None, help="rank of the adapters (default 8)")
    p.add_argument(
        "--alpha", type=positive_float, default=None, help="LoRA/DoRA scaling numerator: update * alpha/r (default 16)"
    )
    p.add_argument("--dropout", type=probability, default=None, help="dropout on the adapters' input (default 0.1)")
    p.add_argument("--target-modules", default=None, help="comma-separated HF module names (default query,value)")
    p.add_argument(
        "--sparse-lambda",
        type=non_negative_float,
        default=None,
        help="sparse_lora: L1 strength λ on the gates: a rank is kept while the loss gradient on its gate "
        f"reaches λ, on a short run and a long one alike (default {methods.sora.DEFAULT_SPARSE_LAMBDA}; "
        "0: no pruning). Gates are judged once the warm-up is over and the training loss has fallen by more "
        "than its noise",
    )
    p.add_argument(
        "--blocksize", type=positive_int, default=None, help="qlora, qdora: weights per NF4 scale (default 64)"
    )
    p.add_argument("--no-double-quant", action="store_true", default=None, help="qlora, qdora: NF4 scales in fp32")
    p.add_argument(
        "--eval-every", type=non_negative_int, default=500, help="validate every N steps (0: only at the end)"
    )
    p.add_argument(
        "--patience",
        type=non_negative_int,
        default=0,
        help="stop once N validations in a row have not beaten the best (0, the default: never); the best "
        "checkpoint is tested as always, and the schedule is the one planned for the whole run",
    )
    p.add_argument(
        "--patience-from",
        type=non_negative_int,
        default=0,
        help="--patience counts only the validations after step N (default 0): a run that sits at the majority "
        "class before it starts to learn is not stopped for it",
    )
    p.add_argument("--eval-batch-size", type=positive_int, default=64, help="blocks or examples per evaluation batch")
    p.add_argument("--save-every", type=non_negative_int, default=500, help="checkpoint every N steps (0: never)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint in --output-dir (damaged ones are passed over)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=positive_int,
        default=2,
        help="checkpoints kept (default 2); the newest intact one is never deleted",
    )
    p.add_argument("--log-every", type=positive_int, default=10, help="write a train_log.jsonl line every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, masks, dropout and adapter init")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--cache-dir", default=None, help="cache of token ids (default ~/.cache/minibert-peft)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; slower start)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def check_args(args, model_config):
    """What argparse's types (training/flags.py) cannot know: the limits of this model."""
    if not 3 <= args.max_seq_len <= model_config.max_position_embeddings:
        raise UsageError(
            f"--max-seq-len {args.max_seq_len}: {args.model} takes 3 to {model_config.max_position_embeddings} tokens"
        )


def method_flags(args, say) -> None:
    """The flags of METHOD_FLAGS: their defaults where left out and the method uses them, else None; one
    line for those given that this method does not use (a warning: the run goes on)."""
    unused = [name for name, (_, users) in METHOD_FLAGS.items() if args.method not in users]
    given = [f"--{name.replace('_', '-')}" for name in unused if getattr(args, name) is not None]
    if given:
        say(f"warning: --method {args.method} does not use {', '.join(given)}; ignored")
    for name, (default, _) in METHOD_FLAGS.items():
        if name in unused:
            setattr(args, name, None)
        elif getattr(args, name) is None:
            setattr(args, name, default)


def method_options(args) -> dict:
    if args.method == "sparse_lora":
        return {"sparse_lambda": args.sparse_lambda}
    if args.method in methods.QUANTISED:
        return {"blocksize": args.blocksize, "double_quant": not args.no_double_quant}
    return {}


def learning_rate(step: int, peak: float, warmup: int, total: int) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then linear decay to 0 at step `total` (0-based step)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * max(0.0, (total - step) / max(1, total - warmup))


class Objective(torch.nn.Module):
    """The task's training loss as a module's forward, so that DistributedDataParallel (which hooks forward)
    can wrap it. `scale` turns this process's mean into its share of the mean over the whole global batch
    (training/distributed.py)."""

    def __init__(self, model, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch, scale):
        return self.task.loss(self.model, batch) * scale


def wrap_objective(objective: Objective, args, world: int, device):
    """torch.compile (--compile) and DistributedDataParallel (torchrun) around the objective; TF32 on CUDA."""
    if args.compile:
        objective = torch.compile(objective)
    if world > 1:
        device_ids = [device] if device.type == "cuda" else None
        objective = torch.nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return objective


def main(argv=None) -> int:
    args = parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM like Ctrl-C
    try:
        return run(args)
    except KeyboardInterrupt:  # before the loop (loading, tokenising) or after it (testing, writing results)
        good = latest_intact(Path(args.output_dir)) if args.output_dir else None
        resume = f"continue from {good} with the same command plus --resume" if good else "run the command again"
        print(f"interrupted: nothing is half-written; {resume}", file=sys.stderr)
        return 130
    except (UsageError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:
        good = latest_intact(Path(args.output_dir)) if args.output_dir else None  # run() fills in the default
        resume = f"resume from {good} by rerunning the same command with --resume" if good else "no checkpoint yet"
        print(f"error: {e}. Free the space (or fix the permissions); {resume}", file=sys.stderr)
        return 4
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def check_method(args, task):
    if args.method == "head" and task.kind == "mlm":
        raise UsageError("--method head trains a classification head: use it with a classification or regression task")
    return task


def diverged(error: FloatingPointError, out_dir: Path) -> int:
    """A loss or gradient that became NaN or infinite: one line naming what is kept; exit code 3."""
    good = latest_intact(out_dir)
    kept = f"the last good checkpoint is kept: {good}" if good else "no checkpoint had been saved yet"
    print(f"error: {error}; stopping ({kept}). Try a lower --lr", file=sys.stderr)
    return 3


def stop_early(state: RunState, args, world: int) -> bool:
    """--patience: the last `patience` validations did not beat the best. Only the main process validates, so
    it decides for all (a sum over processes: the others add 0)."""
    stale = torch.tensor(float(state.stale_validations >= args.patience))
    return all_reduce_sum(stale, world).item() > 0


def improves(result: dict, best: dict, task) -> bool:
    """Whether a validation result beats the best so far on the metric that picks the checkpoint."""
    old, new = best.get(task.selection), result[task.selection]
    return old is None or (new > old if task.higher_is_better else new < old)


# What a checkpoint must have been made with for --resume to continue it: everything that changes what its
# weights mean or how they go on learning. Only the length of the run and its cadence may change (--epochs,
# --max-steps, --eval-every, --save-every, --log-every, --keep-checkpoints) and where it runs (--device).
RESUME_IDENTITY = ("data_files", "method", "model", "r", "alpha", "dropout", "target_modules", "sparse_lambda",
                   "blocksize", "no_double_quant", "max_seq_len", "batch_size", "seed", "lr", "warmup_steps",
                   "weight_decay")  # fmt: skip


def run_identity(args, task, world: int) -> dict:
    return {"task": task.name, "world_size": world, **{key: getattr(args, key) for key in RESUME_IDENTITY}}


def build_task(args, say):
    """The task: a named one (--task), or your files (--train-file), whose kind is inferred if not given."""
    if args.train_file is None:
        given = [f"--{name.replace('_', '-')}" for name in FILE_FLAGS if getattr(args, name) is not None]
        if given or args.task in tasks.KINDS:
            raise UsageError(
                f"{', '.join(given) or '--task ' + args.task} is for your own files: add --train-file PATH"
            )
        args.data_files = None
        return check_method(args, tasks.get(args.task or "wikitext2"))
    if args.task in tasks.TASKS:
        raise UsageError(f"--task {args.task} reads its own dataset; with --train-file, --task is classification, "
                         "regression or mlm (or left out, to be inferred)")  # fmt: skip
    if args.data_dir is not None:
        raise UsageError("--data-dir is for the named tasks; with --train-file, pass each file by its path")

    def absolute(path):  # evaluate.py and predict.py may run from another directory
        return str(Path(path).expanduser().resolve()) if path else None

    files = data.DataFiles(absolute(args.train_file), absolute(args.validation_file), absolute(args.test_file),
                           args.text_column, args.text_pair_column, args.label_column)  # fmt: skip
    args.data_files = dataclasses.asdict(files)  # kept in metrics.json, so evaluate.py and predict.py find them
    task = tasks.from_files(files, args.task)
    check_method(args, task)
    if args.task is None:
        kind = task.kind
        why = {
            "mlm": "a text file, no column named",
            "regression": "every label is a number, some not integers",
            "classification": f"{len(task.label_names or ())} classes: {', '.join(task.label_names or ())}",
        }[kind]
        say(f"--task {kind} (inferred from {args.train_file}: {why}; pass --task to choose)")  # fmt: skip
    return task


def model_reference(name_or_path: str) -> str:
    """How the run records its base model so that it can be found again from anywhere: a local folder by
    its absolute path, a hub model by its repo id."""
    local = Path(name_or_path).expanduser()
    return str(local.resolve()) if local.is_dir() else name_or_path


def output_dir(args, task) -> Path:
    model_name = args.model.rstrip("/").split("/")[-1]
    seed = f"-seed{args.seed}" if args.seed else ""  # two seeds never share a directory
    out_dir = Path(args.output_dir or f"runs/{args.method}-{task.name}-{model_name}{seed}")
    args.output_dir = str(out_dir)
    return out_dir


def refuse_a_run_there(args, out_dir: Path) -> None:
    """Without --resume, a folder that holds a run (finished, or with checkpoints) is never written over."""
    if not args.resume and ((out_dir / "metrics.json").exists() or (out_dir / "checkpoints").exists()):
        raise UsageError(f"{out_dir} already holds a run; pass --resume to continue it, or choose another --output-dir")


def say_columns(args, task, say) -> None:
    """Your labelled files: which columns were read, when any of them was guessed (data/user_files.py)."""
    named = [args.text_column, args.text_pair_column, args.label_column]
    if args.data_files is None or task.kind == "mlm" or all(name is not None for name in named):
        return
    d = task.dataset
    pair = f", pair {d.pair_column!r}" if d.pair_column else ""
    say(f"columns: text {d.text_column!r}{pair}, label {d.label_column!r} (name others with --text-column, "
        "--text-pair-column, --label-column)")  # fmt: skip


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
    if args.max_seq_len is None:
        args.max_seq_len = task.default_max_seq_len
    if args.lr is None:
        args.lr = METHOD_LR.get(args.method, DEFAULT_LR)
    check_args(args, model.config)
    cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
    task.load_data(tokenizer, args.data_dir, cache_dir, args.max_seq_len)
    for line in task.notices():
        say(line)
    say_columns(args, task, say)
    targets = args.target_modules.split(",") if args.target_modules else None
    options = method_options(args)
    methods.apply(
        model, args.method, r=args.r, alpha=args.alpha, dropout=args.dropout, target_modules=targets, **options
    )
    return model.train()


def run(args) -> int:
    rank, world, device = setup_distributed(args.device)
    args.precision = choose_precision(args.precision, device)  # "fp32" or "bf16"
    is_main = rank == 0
    say = (lambda line: print(line, file=sys.stderr)) if is_main else (lambda line: None)
    torch.manual_seed(args.seed)  # adapter initialisation and dropout
    method_flags(args, say)
    args.model = model_reference(args.model)
    task = build_task(args, say)
    out_dir = output_dir(args, task)
    with RunFolder(out_dir) if is_main else contextlib.nullcontext():  # locked: one training at a time
        refuse_a_run_there(args, out_dir)
        return fit(args, task, out_dir, rank, world, device, say)


def fit(args, task, out_dir: Path, rank: int, world: int, device, say) -> int:
    """Load, train, test, write: the run itself, in its locked folder."""
    is_main = rank == 0
    model = load_model_and_data(args, task, device, say)

    # -- optimisation: AdamW over what trains (the adapters, the head; all for full); SoRA's gates apart, faster --
    params = [p for p in model.parameters() if p.requires_grad]
    # fused: each parameter's update in one pass (the same numbers to ~1e-7; a full fine-tuning step ~15% faster)
    optimizer = torch.optim.AdamW(methods.sora.param_groups(model, args.weight_decay), lr=args.lr, fused=True)
    global_batch = args.batch_size * world
    steps_per_epoch = task.batches_per_epoch(global_batch)
    if steps_per_epoch == 0:
        raise UsageError(f"the training split is smaller than one batch of {global_batch}")
    total_steps = min(args.epochs * steps_per_epoch, args.max_steps or math.inf)
    objective = wrap_objective(Objective(model, task), args, world, device)

    identity = run_identity(args, task, world)
    state, log_path = RunState(), out_dir / "train_log.jsonl"
    if args.resume:
        saved, best_state = load_checkpoint(out_dir, model, optimizer, identity, say)
        state = RunState.restored(saved, best_state)
        if is_main:
            trim_log(log_path, state.step)
        say(f"resumed from step {state.step}")
    progress = Progress(total_steps, state.step, f"{args.method} {task.name}", enabled=is_main)

    def checkpoint():
        if is_main:
            sync_log(log_path)  # the log's lines up to this checkpoint, on disk with it
            run_state = {"run": identity, "epoch": state.step // steps_per_epoch, **state.saved()}
            save_checkpoint(out_dir, model, optimizer, run_state, state.best_state, keep=args.keep_checkpoints)

    def validate():
        start = time.perf_counter()
        result = task.evaluate(model, "validation", args.eval_batch_size, device, args.precision)
        state.eval_time += time.perf_counter() - start
        state.last_validated = state.step
        improved = improves(result, state.best, task)
        counts = state.step > args.patience_from  # --patience-from: earlier validations are not held against it
        state.stale_validations = 0 if improved else state.stale_validations + counts
        if improved:
            state.best = {"step": state.step, **result}
            state.best_state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            save_model(model, out_dir, args, task)
        best = " (best)" if state.best["step"] == state.step else ""
        progress.write(f"step {state.step}: validation {task.describe(result)}{best}")
        append_line(log_path, json.dumps({"step": state.step, "split": "validation", **result}))

    # -- the training loop --
    interrupted = False
    try:
        while state.step < total_steps:
            step, start = state.step, time.perf_counter()
            torch.manual_seed(data.seed_of(args.seed, step, rank))  # dropout: a pure function of the step
            epoch, index = divmod(step, steps_per_epoch)
            batch = task.train_batch(args.seed, epoch, index, global_batch)  # (G, ...), the same on every process
            mine = slice(rank * args.batch_size, (rank + 1) * args.batch_size)  # this process's share
            local = {key: value[mine].to(device) for key, value in batch.items()}
            lr = learning_rate(step, args.lr, args.warmup_steps, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]  # SoRA's gates: GATE_LR_SCALE x lr

            n_local = task.count(local).float().to(device)  # masked tokens or examples in this share
            n_global = all_reduce_sum(n_local.clone(), world)
            scale = n_local * world / n_global.clamp(min=1)  # mean over the global batch, whatever the split
            with autocast(device, args.precision):
                loss = objective(local, scale)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
            global_loss = all_reduce_sum(loss.detach().float(), world) / world
            if not (torch.isfinite(global_loss) and torch.isfinite(grad_norm)):
                raise FloatingPointError(f"step {step}: the loss is {global_loss.item()} (gradient norm {grad_norm})")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if args.method == "sparse_lora" and state.pruning.update(global_loss.item(), step >= args.warmup_steps):
                if state.pruning.started_at == step:
                    progress.write(f"step {step}: the training loss has fallen; Sparse LoRA starts judging its gates")
                methods.proximal_step(model, optimizer)  # g <- sign(g) max(|g| - lr_g λ / sqrt(v̂), 0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            state.train_time += time.perf_counter() - start
            state.samples_seen += len(batch["input_ids"])
            state.tokens_seen += task.tokens(batch)
            state.step = step = step + 1

            tokens_per_s = state.tokens_seen / max(state.train_time, 1e-9)
            progress.update(loss=global_loss.item(), lr=lr, tokens_per_s=tokens_per_s)
            if is_main and (step % args.log_every == 0 or step == total_steps):
                line = {"step": step, "split": "train", "loss": global_loss.item(), "lr": lr,
                        "grad_norm": grad_norm.item(), "tokens_per_s": tokens_per_s}  # fmt: skip
                if args.method == "sparse_lora":  # the gates over training: non-zero gates per module
                    line["ranks"] = [row["rank"] for row in methods.gate_report(model)]
                append_line(log_path, json.dumps(line))
            if is_main and args.eval_every and step % args.eval_every == 0:
                validate()
            if args.save_every and step % args.save_every == 0:
                checkpoint()
            at_eval = args.eval_every and step % args.eval_every == 0 and step < total_steps  # the last: not early
            if args.patience and at_eval and stop_early(state, args, world):
                progress.write(f"step {step}: {args.patience} validations without a better one; stopping early")
                state.stopped_early = True
                break
    except KeyboardInterrupt:
        interrupted = True
    except FloatingPointError as e:
        progress.close()
        return diverged(e, out_dir)
    finally:
        progress.close()
    if interrupted:
        checkpoint()
        say(f"interrupted at step {state.step}: checkpoint saved; continue with the same command plus --resume")
        return 130

    if is_main:
        if state.last_validated != state.step:
            validate()
        finish(args, task, model, state, device, world)
    leave_together(model, world)
    return 0


def save_model(model, out_dir: Path, args, task) -> None:
    """The adapter (PEFT's files), or for full fine-tuning the whole model: a transformers checkpoint."""
    if args.method == "full":
        save_model_directory(model, out_dir, args.model, task.label_names)
    else:
        methods.save_adapter(model, out_dir)


def finish(args, task, model, state: RunState, device, world: int) -> None:
    """Restore the best adapter, save it, score it on the test split(s), write metrics.json and the card."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(state.best_state[n])
    out_dir = Path(args.output_dir)
    save_model(model, out_dir, args, task)  # the best adapter, whichever checkpoint the run resumed from
    start = time.perf_counter()
    test_results = {s: task.evaluate(model, s, args.eval_batch_size, device, args.precision) for s in task.test_splits}
    state.eval_time += time.perf_counter() - start
    metrics = final_metrics(args, task, model, state, test_results, device, world)
    write_text(out_dir / "README.md", model_card(metrics))
    write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")  # last: it marks the run finished
    scored = "; ".join(f"{split} {task.describe(result)}" for split, result in test_results.items())
    print(f"{scored or 'no test file: no test metrics'}; results in {out_dir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
