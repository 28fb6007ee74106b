"""Fine-tune BERT or DistilBERT with one PEFT method, for masked language modelling on WikiText-2 or for
sentiment classification on SST-2 or IMDB.

    python train.py --method sparse_lora                      # WikiText-2 MLM, bert-base-uncased, the defaults
    python train.py --task sst2 --method lora                 # SST-2 classification
    python train.py --task imdb --method qlora --model distilbert-base-uncased
    python train.py --task sst2 --method head                 # baseline: only the classification head
    torchrun --nproc_per_node 4 train.py --method hira        # data-parallel, the same script

It writes to --output-dir (default runs/<method>-<task>-<model>):
    adapter_config.json, adapter_model.safetensors   the best adapter (PEFT format; a classifier's head
                        included), or head_model.safetensors for --method head
    metrics.json        every measured number        train_log.jsonl   one line per logged step
    README.md           a model card with the measured values
    checkpoints/        the latest checkpoints, for --resume

The loop, the same for every task (tasks/ holds what differs: data, objective, metrics): load the model
with the task's head and the data; put the method in; then for every step take the task's batch, compute
its loss, backpropagate into the adapters (and the task head), clip, step AdamW and the learning-rate
schedule (and SoRA's proximal step); evaluate on the validation split every --eval-every steps, keeping
the best adapter (lowest validation loss for MLM, highest accuracy for classification); checkpoint every
--save-every steps. At the end the best adapter is scored on the test split.

Exit codes: 0 done; 2 a usage or input mistake (one line on stderr); 3 the loss became NaN or infinite;
4 a file could not be written (disk full, no permission, read-only): the line names the file and the last
good checkpoint, and --resume continues from it once the cause is fixed; 130 interrupted (Ctrl-C or
SIGTERM), with a checkpoint to --resume from. Every file is written atomically (complete or absent).
"""

import argparse
import json
import math
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors import safe_open

import data
import methods
import minibert
import quant
import tasks
from minibert.files import WriteError, append_line, write_text
from training.card import model_card
from training.checkpoints import ResumeError, latest_intact, load_checkpoint, save_checkpoint, trim_log
from training.device import bf16_autocast, peak_memory
from training.distributed import all_reduce_sum, check_replicas_agree, setup_distributed
from training.progress import Progress

DEFAULT_LR = 3e-4  # peak AdamW learning rate of every method but HiRA (methods.hira.DEFAULT_LR)
USER_ERRORS = (minibert.LoadError, methods.AdapterError, data.DataError, quant.QuantError, ResumeError)


class UsageError(Exception):
    """A bad command line or output directory; printed as one line, exit code 2."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--method",
        required=True,
        choices=list(methods.METHODS),
        help="the PEFT method to train; 'head' trains only a classifier's head (a baseline)",
    )
    p.add_argument(
        "--task",
        default="wikitext2",
        choices=tasks.TASKS,
        help="wikitext2: masked LM on WikiText-2 (default); sst2, imdb: sentiment classification",
    )
    p.add_argument("--model", default="bert-base-uncased", help="hub repo id or local directory of a BERT/DistilBERT")
    p.add_argument(
        "--data-dir",
        default=None,
        help="the task's files (the hub's parquet files; for WikiText-2 also wiki.*.raw); default: the hub",
    )
    p.add_argument("--output-dir", default=None, help="where results go (default runs/<method>-<task>-<model>)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training split (default 3)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="blocks or examples per step and process (default 16)")
    p.add_argument(
        "--max-seq-len",
        type=int,
        default=None,
        help="tokens per block or example, [CLS] and [SEP] included (default: wikitext2 and sst2 128, imdb 512)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate of AdamW (default {DEFAULT_LR}; hira {methods.hira.DEFAULT_LR}: its update W0 ⊙ BA "
        "is scaled by W0's small entries, see methods/hira.py)",
    )
    p.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (not on SoRA gates)")
    p.add_argument("--warmup-steps", type=int, default=100, help="linear warm-up steps before linear decay")
    p.add_argument("--r", type=int, default=8, help="rank of the adapters (default 8)")
    p.add_argument("--alpha", type=float, default=16, help="LoRA scaling numerator: update * alpha/r (default 16)")
    p.add_argument("--dropout", type=float, default=0.1, help="dropout on the adapters' input (default 0.1)")
    p.add_argument("--target-modules", default=None, help="comma-separated HF module names (default query,value)")
    p.add_argument(
        "--sparse-lambda",
        type=float,
        default=methods.sora.DEFAULT_SPARSE_LAMBDA,
        help="sparse_lora: L1 strength λ on the gates: a rank is kept while the loss gradient on its gate "
        f"reaches λ, on a short run and a long one alike (default {methods.sora.DEFAULT_SPARSE_LAMBDA}; "
        "0: no pruning). Pruning starts after --warmup-steps",
    )
    p.add_argument("--blocksize", type=int, default=64, help="qlora: weights per NF4 scale (default 64)")
    p.add_argument("--no-double-quant", action="store_true", help="qlora: keep the NF4 scales in fp32")
    p.add_argument("--eval-every", type=int, default=500, help="validate every N steps (0: only at the end)")
    p.add_argument("--eval-batch-size", type=int, default=64, help="blocks or examples per evaluation batch")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (0: never)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest intact checkpoint in --output-dir (damaged ones are passed over)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=int,
        default=2,
        help="checkpoints kept (default 2); the newest intact one is never deleted",
    )
    p.add_argument("--log-every", type=int, default=10, help="write a train_log.jsonl line every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, masks, dropout and adapter init")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    p.add_argument("--cache-dir", default=None, help="cache of token ids (default ~/.cache/minibert-peft)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA; slower start)")
    return p.parse_args(argv)


def check_args(args, model_config):
    if args.batch_size < 1 or args.eval_batch_size < 1:
        raise UsageError(f"--batch-size and --eval-batch-size must be at least 1, got {args.batch_size}")
    if args.epochs < 1 or (args.max_steps is not None and args.max_steps < 1):
        raise UsageError("--epochs and --max-steps must be at least 1")
    if not 3 <= args.max_seq_len <= model_config.max_position_embeddings:
        raise UsageError(
            f"--max-seq-len {args.max_seq_len}: {args.model} takes 3 to {model_config.max_position_embeddings} tokens"
        )
    if args.lr <= 0 or args.warmup_steps < 0 or min(args.eval_every, args.save_every, args.log_every) < 0:
        raise UsageError("--lr must be > 0; --warmup-steps, --eval-every, --save-every, --log-every >= 0")
    if args.keep_checkpoints < 1:
        raise UsageError(f"--keep-checkpoints must be at least 1, got {args.keep_checkpoints}")


def check_output_dir(out_dir: Path) -> None:
    """Before any work: --output-dir must be a directory we can write in (it is created if need be)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output-dir {out_dir}: a file, not a directory; choose a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()  # can we create files there?
    except OSError as e:
        raise UsageError(f"--output-dir {out_dir}: cannot write there ({e.strerror or e}); choose another") from None


def method_options(args) -> dict:
    if args.method == "sparse_lora":
        return {"sparse_lambda": args.sparse_lambda}
    if args.method == "qlora":
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


def exported_adapter(out_dir: Path) -> dict:
    """What the saved adapter holds (Sparse LoRA's is smaller than what was trained): parameters and bytes."""
    path = out_dir / ("head_model.safetensors" if (out_dir / "head_model.safetensors").exists() else
                      "adapter_model.safetensors")  # fmt: skip
    with safe_open(str(path), framework="pt") as f:
        params = sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return {"exported_params": params, "exported_file_bytes": path.stat().st_size}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (UsageError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:
        good = latest_intact(Path(args.output_dir)) if args.output_dir else None  # run() fills in the default
        resume = f"resume from {good} by rerunning the same command with --resume" if good else "no checkpoint yet"
        print(f"error: {e}. Free the space (or fix the permissions); {resume}", file=sys.stderr)
        return 4


def run(args) -> int:
    rank, world, device = setup_distributed(args.device)
    is_main = rank == 0
    torch.manual_seed(args.seed)  # adapter initialisation and dropout
    task = tasks.get(args.task)
    if args.method == "head" and args.task == "wikitext2":
        raise UsageError("--method head trains a classification head: use it with --task sst2 or --task imdb")

    # -- model and data --
    model_name = args.model.rstrip("/").split("/")[-1]
    out_dir = Path(args.output_dir or f"runs/{args.method}-{args.task}-{model_name}")
    args.output_dir = str(out_dir)
    if not args.resume and ((out_dir / "metrics.json").exists() or (out_dir / "checkpoints").exists()):
        raise UsageError(f"{out_dir} already holds a run; pass --resume to continue it, or choose another --output-dir")
    if is_main:
        check_output_dir(out_dir)
    tokenizer = minibert.load_tokenizer(args.model)
    qlora_on_cuda = args.method == "qlora" and device.type == "cuda"
    model = task.load_model(args.model, dtype=torch.bfloat16 if qlora_on_cuda else None, device=device)
    args.max_seq_len = args.max_seq_len or task.default_max_seq_len
    if args.lr is None:
        args.lr = methods.hira.DEFAULT_LR if args.method == "hira" else DEFAULT_LR
    check_args(args, model.config)
    cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
    task.load_data(tokenizer, args.data_dir, cache_dir, args.max_seq_len)

    targets = args.target_modules.split(",") if args.target_modules else None
    methods.apply(
        model,
        args.method,
        r=args.r,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=targets,
        **method_options(args),
    )
    model.train()
    trainable_params, total_params = methods.count_parameters(model)
    model_size_mb = quant.model_bytes(model) / 1e6

    # -- optimisation: AdamW over the adapters; SoRA's gates without weight decay (they have their own L1), faster --
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(methods.sora.param_groups(model, args.weight_decay), lr=args.lr)
    global_batch = args.batch_size * world
    steps_per_epoch = task.batches_per_epoch(global_batch)
    if steps_per_epoch == 0:
        raise UsageError(f"the training split is smaller than one batch of {global_batch}")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    objective = Objective(model, task)
    if args.compile:
        objective = torch.compile(objective)
    if world > 1:
        device_ids = [device] if device.type == "cuda" else None
        objective = torch.nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    run_identity = {
        "task": args.task,
        "method": args.method,
        "model": args.model,
        "r": args.r,
        "max_seq_len": args.max_seq_len,
        "batch_size": args.batch_size,
        "world_size": world,
        "seed": args.seed,
    }
    step, best, last_validated = 0, {"step": None}, None  # best: the best validation result and its step
    best_state = {}  # the best adapter so far, as trained
    train_time, eval_time, samples_seen, tokens_seen = 0.0, 0.0, 0, 0
    log_path = out_dir / "train_log.jsonl"
    if args.resume:
        say = (lambda line: print(line, file=sys.stderr)) if is_main else (lambda line: None)
        state, best_state = load_checkpoint(out_dir, model, optimizer, run_identity, say)
        step, best, last_validated = state["step"], state["best"], state["last_validated"]
        train_time, eval_time = state["train_time"], state["eval_time"]
        samples_seen, tokens_seen = state["samples_seen"], state["tokens_seen"]
        if is_main:
            trim_log(log_path, step)
            say(f"resumed from step {step}")
    progress = Progress(total_steps, step, f"{args.method} {args.task}", enabled=is_main)

    def checkpoint():
        if is_main:
            save_checkpoint(
                out_dir,
                model,
                optimizer,
                {
                    "run": run_identity,
                    "step": step,
                    "epoch": step // steps_per_epoch,
                    "best": best,
                    "last_validated": last_validated,
                    "train_time": train_time,
                    "eval_time": eval_time,
                    "samples_seen": samples_seen,
                    "tokens_seen": tokens_seen,
                },
                best_state,
                keep=args.keep_checkpoints,
            )

    def is_better(result: dict) -> bool:
        if best["step"] is None:
            return True
        new, old = result[task.selection], best[task.selection]
        return new > old if task.higher_is_better else new < old

    def validate():
        nonlocal best, best_state, eval_time, last_validated
        start = time.perf_counter()
        result = task.evaluate(model, "validation", args.eval_batch_size, device)
        eval_time += time.perf_counter() - start
        last_validated = step
        if is_better(result):
            best = {"step": step, **result}
            best_state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            methods.save_adapter(model, out_dir)
        progress.write(f"step {step}: validation {task.describe(result)}" + (" (best)" if best["step"] == step else ""))
        append_line(log_path, json.dumps({"step": step, "split": "validation", **result}))

    # -- the training loop --
    interrupted = False
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM like Ctrl-C
    try:
        while step < total_steps:
            start = time.perf_counter()
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
            with bf16_autocast(device):
                loss = objective(local, scale)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            global_loss = all_reduce_sum(loss.detach().float(), world) / world
            if not (torch.isfinite(global_loss) and torch.isfinite(grad_norm)):
                raise FloatingPointError(f"step {step}: the loss is {global_loss.item()} (gradient norm {grad_norm})")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if args.method == "sparse_lora" and step >= args.warmup_steps:  # once the adapters have started
                methods.proximal_step(model, optimizer)  # g <- sign(g) max(|g| - lr_g λ / sqrt(v̂), 0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - start
            samples_seen += len(batch["input_ids"])
            tokens_seen += task.tokens(batch)
            step += 1

            tokens_per_s = tokens_seen / max(train_time, 1e-9)
            progress.update(global_loss.item(), lr, tokens_per_s)
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
    except KeyboardInterrupt:
        interrupted = True
    except FloatingPointError as e:
        progress.close()
        print(f"error: {e}; stopping. The last good checkpoint is kept in {out_dir / 'checkpoints'}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        progress.close()
    if interrupted:
        checkpoint()
        if is_main:
            print(
                f"interrupted at step {step}: checkpoint saved; continue with the same command plus --resume",
                file=sys.stderr,
            )
        return 130

    # -- the end: validate if not just done, restore the best adapter, score it on the test split --
    if is_main:
        if last_validated != step:
            validate()
        with torch.no_grad():
            for n, p in model.named_parameters():
                if p.requires_grad:
                    p.copy_(best_state[n])
        methods.save_adapter(model, out_dir)  # the best adapter, whichever checkpoint the run resumed from
        start = time.perf_counter()
        test_result = task.evaluate(model, "test", args.eval_batch_size, device)
        eval_time += time.perf_counter() - start
        metrics = {
            "finished": True,
            "task": args.task,
            "method": args.method,
            "base_model": args.model,
            "architecture": model.config.arch,
            "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("resume", "device", "cache_dir")},
            "target_modules": model.adapter_config.target_modules,
            "modules_to_save": model.adapter_config.modules_to_save,
            "trainable_params": trainable_params,
            "total_params": total_params,
            "trainable_percent": 100 * trainable_params / total_params,
            "model_size_mb": model_size_mb,
            "steps": step,
            "epochs": step / steps_per_epoch,
            **task.data_report(global_batch),
            "train_time_s": train_time,
            "eval_time_s": eval_time,
            "train_samples_per_s": samples_seen / train_time,
            "train_tokens_per_s": tokens_seen / train_time,
            **peak_memory(device),
            "best_step": best["step"],
            **{f"validation_{key}": value for key, value in best.items() if key != "step"},
            **{f"test_{key}": value for key, value in test_result.items()},
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "world_size": world,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if args.method == "sparse_lora":
            metrics["sparse_lora_gates"] = methods.gate_report(model)  # effective rank per module
            metrics["zero_gate_share"] = methods.zero_gate_share(model)
        metrics |= exported_adapter(out_dir)
        write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text(out_dir / "README.md", model_card(metrics))
        print(f"test {task.describe(test_result)}; results in {out_dir}", file=sys.stderr)
    if world > 1:
        check_replicas_agree(model, world)
        torch.distributed.barrier()  # leave together: gloo can abort a process torn down while its peer still talks
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
