"""The command line of train.py: its flags, their defaults, and what they mean for the run.

argparse checks each value's kind (training/flags.py); the rest is checked here, with one line naming the
flag and the fix (UsageError, exit code 2): flags only some methods use (METHOD_FLAGS: a warning for one
given to a method that ignores it), file flags without --train-file, a --max-seq-len the model cannot take.
`build_task` turns --task, or your files, into the task the run learns (tasks/).
"""

import argparse
import dataclasses
import math
from pathlib import Path

import data
import methods
import tasks
from training.device import PRECISION_HELP, PRECISIONS
from training.exits import UsageError
from training.flags import non_negative_float, non_negative_int, positive_float, positive_int, probability

DEFAULT_WARMUP = 100  # steps of linear warm-up, when the run is longer
DEFAULT_LR = 3e-4  # peak AdamW learning rate of every method but HiRA and full fine-tuning (their DEFAULT_LR)
METHOD_LR = {"hira": methods.hira.DEFAULT_LR, "full": methods.full.DEFAULT_LR}
ADAPTERS = tuple(name for name, wrapper in methods.METHODS.items() if wrapper is not None)
METHOD_FLAGS = {  # flags that only some methods use: name -> (default, the methods that use it)
    "r": (8, ADAPTERS),
    "alpha": (16.0, tuple(name for name in ADAPTERS if name != "hira")),  # HiRA has no scaling
    "dropout": (0.1, ADAPTERS),
    "target_modules": (None, ADAPTERS),
    "sparse_lambda": (None, ("sparse_lora",)),  # None: the rule's (methods.sora.DEFAULT_STRENGTH), by method_flags
    "sora_rule": (methods.sora.DEFAULT_RULE, ("sparse_lora",)),
    "sora_schedule": (None, ("sparse_lora",)),
    "sora_l1": (None, ("sparse_lora",)),
    "blocksize": (64, methods.QUANTISED),
    "no_double_quant": (False, methods.QUANTISED),
}
FILE_FLAGS = ("validation_file", "test_file", "text_column", "text_pair_column", "label_column")


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """train.py's flags; `description`: its --help text (train.py's docstring)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
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
        "--warmup-steps",
        type=non_negative_int,
        default=None,
        help=f"linear warm-up steps before linear decay (default {DEFAULT_WARMUP}; a run of no more steps warms up "
        "for its first 6%%)",
    )
    add_method_flags(p)
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


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """The flags of METHOD_FLAGS: what only some methods use (their defaults are filled by method_flags)."""
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
        help="sparse_lora: the soft threshold's size: ξ, subtracted from every |gate| after every step (--sora-rule "
        "paper), or λ under ours, a rank kept while the loss gradient on its gate reaches λ "
        f"(default: ξ = {methods.sora.DEFAULT_STRENGTH['constant']} under paper, λ = "
        f"{methods.sora.DEFAULT_STRENGTH['adam']} under ours; 0: no pruning)",
    )
    p.add_argument(
        "--sora-rule",
        default=None,
        help="sparse_lora: how gates start, learn and are cut: 'paper' (the authors' code: randn gates, an L1 term "
        "in the loss, a constant ξ from step 0, weight decay 0.1) or 'ours' (default: the paper plus "
        f"{', '.join(methods.sora.OURS)}); add or remove a departure ({', '.join(methods.sora.DEPARTURES)}) "
        "with +name or -name, e.g. ours-settle",
    )
    p.add_argument(
        "--sora-l1",
        type=non_negative_float,
        default=None,
        help="sparse_lora: c of the L1 term c * Σ|g| / (number of gates) added to the loss, instead of the rule's "
        "(paper: 10; ours: 0, no term)",
    )
    p.add_argument(
        "--sora-schedule",
        type=xi_schedule,
        default=None,
        metavar="XI_MAX,STAGES",
        help="sparse_lora: the authors' sparsifying scheduler: cut the run into STAGES equal stages and raise ξ "
        "linearly from --sparse-lambda to XI_MAX, one value a stage; with --eval-every at a stage's length, the "
        "validations trace score against kept ranks (train_log.jsonl). Default: off",
    )
    p.add_argument(
        "--blocksize", type=positive_int, default=None, help="qlora, qdora: weights per NF4 scale (default 64)"
    )
    p.add_argument("--no-double-quant", action="store_true", default=None, help="qlora, qdora: NF4 scales in fp32")


def parse_args(argv=None, description: str = ""):
    return build_parser(description).parse_args(argv)


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
    if args.sora_rule is not None:
        try:
            methods.sora.parse_rule(args.sora_rule)
        except methods.AdapterError as e:
            raise UsageError(f"--sora-rule: {e}") from None
        if args.sparse_lambda is None:  # the rule's own: its units are its threshold's
            args.sparse_lambda = methods.sora.default_strength(args.sora_rule)


def xi_schedule(text: str) -> str:
    """--sora-schedule's "XI_MAX,STAGES", e.g. "3e-3,5", checked (kept as text: it goes into metrics.json)."""
    try:
        xi_max, stages = text.split(",")
        xi_max, stages = float(xi_max), int(stages)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: write XI_MAX,STAGES, e.g. 3e-3,5") from None
    if xi_max < 0 or stages < 2:
        raise argparse.ArgumentTypeError(f"{text!r}: XI_MAX must be >= 0 and STAGES at least 2")
    return text


def sparsify(args, total_steps: int) -> "methods.sora.Sparsify | None":
    """The --sora-schedule of this run, over its `total_steps`, or None."""
    if not args.sora_schedule:
        return None
    xi_max, stages = args.sora_schedule.split(",")
    return methods.sora.Sparsify(float(xi_max), int(stages), total_steps)


def fit_warmup(args, total_steps: int, say) -> None:
    """The default warm-up, DEFAULT_WARMUP steps, unless the run is no longer: then 6% of it (run_glue's and
    the LoRA paper's ratio), said in one line. A warm-up the user chose is kept, with a warning if the run
    ends before it does: it would never reach its peak rate (nor, under Sparse LoRA's own rule, judge a gate)."""
    if args.warmup_steps is None:
        args.warmup_steps = DEFAULT_WARMUP
        if DEFAULT_WARMUP >= total_steps:
            args.warmup_steps = math.ceil(0.06 * total_steps)
            say(f"note: the run ({total_steps} steps) is shorter than the default warm-up ({DEFAULT_WARMUP}); it "
                f"warms up for its first 6%, {args.warmup_steps} steps (choose with --warmup-steps)")  # fmt: skip
    elif args.warmup_steps >= total_steps:
        say(f"warning: the warm-up ({args.warmup_steps} steps) is as long as the run ({total_steps} steps): "
            "the learning rate never reaches its peak")  # fmt: skip


def method_options(args) -> dict:
    if args.method == "sparse_lora":
        return {"sparse_lambda": args.sparse_lambda, "rule": args.sora_rule, "l1": args.sora_l1}
    if args.method in methods.QUANTISED:
        return {"blocksize": args.blocksize, "double_quant": not args.no_double_quant}
    return {}


def fill_defaults(args, task) -> None:
    """The defaults that depend on the task and the method: --max-seq-len and --lr."""
    if args.max_seq_len is None:
        args.max_seq_len = task.default_max_seq_len
    if args.lr is None:
        args.lr = METHOD_LR.get(args.method, DEFAULT_LR)


def check_method(args, task):
    if args.method == "head" and task.kind == "mlm":
        raise UsageError("--method head trains a classification head: use it with a classification or regression task")
    return task


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


def say_columns(args, task, say) -> None:
    """Your labelled files: which columns were read, when any of them was guessed (data/user_files.py)."""
    named = [args.text_column, args.text_pair_column, args.label_column]
    if args.data_files is None or task.kind == "mlm" or all(name is not None for name in named):
        return
    d = task.dataset
    pair = f", pair {d.pair_column!r}" if d.pair_column else ""
    say(f"columns: text {d.text_column!r}{pair}, label {d.label_column!r} (name others with --text-column, "
        "--text-pair-column, --label-column)")  # fmt: skip
