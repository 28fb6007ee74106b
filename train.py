"""Fine-tune BERT or DistilBERT for masked language modelling on WikiText-2 with one PEFT method.

    python train.py --method sparse_lora                      # bert-base-uncased, the defaults below
    python train.py --method lora --model distilbert-base-uncased
    torchrun --nproc_per_node 4 train.py --method hira        # data-parallel, the same script

It writes to --output-dir (default runs/<method>-<model>):
    adapter_config.json, adapter_model.safetensors   the best adapter (lowest validation loss), PEFT format
    metrics.json        every measured number        train_log.jsonl   one line per logged step
    README.md           a model card with the measured values
    checkpoints/        the latest checkpoint, for --resume

The loop, in order: load the model and the data; put the method in; then for every step take a batch
of blocks, mask 15% of their tokens, compute the loss at the masked positions only, backpropagate into
the adapters, clip, step AdamW and the learning-rate schedule (and SoRA's proximal step); evaluate on
the validation split every --eval-every steps; checkpoint every --save-every steps. At the end the best
adapter is scored on the test split: perplexity = exp(mean cross-entropy over the masked tokens).
"""

import argparse
import json
import math
import os
import platform
import resource
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

import data
import methods
import minibert
import quant
from methods.peft_format import write_atomically

USER_ERRORS = (minibert.LoadError, methods.AdapterError, data.DataError, quant.QuantError)


class UsageError(Exception):
    """A bad command line or output directory; printed as one line, exit code 2."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", required=True, choices=list(methods.METHODS), help="the PEFT method to train")
    p.add_argument("--model", default="bert-base-uncased", help="hub repo id or local directory of a BERT/DistilBERT")
    p.add_argument("--data-dir", default=None, help="WikiText-2 files (parquet or wiki.*.raw); default: the hub")
    p.add_argument("--output-dir", default=None, help="where results go (default runs/<method>-<model>)")
    p.add_argument("--epochs", type=int, default=3, help="passes over the training split (default 3)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    p.add_argument("--batch-size", type=int, default=16, help="blocks per step and process (default 16)")
    p.add_argument("--max-seq-len", type=int, default=128, help="tokens per block, [CLS] and [SEP] included")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of AdamW (default 3e-4)")
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
        help="sparse_lora: L1 strength λ on the gates; threshold per step lr*λ (default 2.0)",
    )
    p.add_argument("--blocksize", type=int, default=64, help="qlora: weights per NF4 scale (default 64)")
    p.add_argument("--no-double-quant", action="store_true", help="qlora: keep the NF4 scales in fp32")
    p.add_argument("--eval-every", type=int, default=500, help="validate every N steps (0: only at the end)")
    p.add_argument("--eval-batch-size", type=int, default=64, help="blocks per evaluation batch (default 64)")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (0: never)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    p.add_argument("--log-every", type=int, default=10, help="write a train_log.jsonl line every N steps")
    p.add_argument("--seed", type=int, default=0, help="seed of data order, masks, dropout and adapter init")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: CUDA if available)")
    p.add_argument("--cache-dir", default=None, help="cache of tokenised blocks (default ~/.cache/minibert-peft)")
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


# ---- distributed ----


def setup_distributed(device_arg):
    """Rank, world size and device; under torchrun (WORLD_SIZE > 1) also the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device_arg or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return rank, world, device


def all_reduce_sum(value: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        dist.all_reduce(value)
    return value


class MaskedLMObjective(torch.nn.Module):
    """The training loss as a module's forward, so that DistributedDataParallel (which hooks forward) can
    wrap it. `scale` turns this process's mean into its share of the mean over the whole global batch."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, labels, scale):
        return self.model.mlm_loss(input_ids, labels) * scale


# ---- data ----


def load_blocks(args, tokenizer, splits=data.SPLITS) -> dict[str, torch.Tensor]:
    """{split: (n, max_seq_len) int64 blocks} (cached on disk); args: data_dir, cache_dir, max_seq_len."""
    cache_dir = Path(args.cache_dir) if args.cache_dir else data.default_cache_dir()
    blocks = {}
    for split, content in data.load_wikitext(args.data_dir, splits).items():
        try:
            array = data.build_blocks(content["lines"], tokenizer, args.max_seq_len, cache_dir)
        except ValueError as e:
            raise data.DataError(f"{content['source']}: {e}") from None
        blocks[split] = torch.from_numpy(array.astype(np.int64))
    return blocks


def bf16_autocast(device):
    """bf16 autocast on CUDA (matmuls in bf16, fp32 master weights); a no-op context on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate_mlm(model, masked: dict, batch_size: int, device, top_k: int = 1) -> dict:
    """Token-weighted masked-LM loss, perplexity = exp(loss), and top-1 (and top-k) accuracy on fixed masks."""
    was_training = model.training
    model.eval()
    loss_sum, correct, correct_k, count = 0.0, 0, 0, 0
    for i in range(0, len(masked["input_ids"]), batch_size):
        input_ids = masked["input_ids"][i : i + batch_size].to(device)
        labels = masked["labels"][i : i + batch_size].to(device)
        with bf16_autocast(device):
            logits = model.masked_logits(input_ids, labels).float()  # (N, V) at the masked positions only
        targets = labels[labels != data.IGNORE]  # (N,)
        loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
        top = logits.topk(top_k, dim=-1).indices  # (N, k)
        correct += (top[:, 0] == targets).sum().item()
        correct_k += (top == targets[:, None]).any(dim=-1).sum().item()
        count += len(targets)
    model.train(was_training)
    loss = loss_sum / count
    result = {"loss": loss, "perplexity": math.exp(loss), "accuracy": correct / count, "masked_tokens": count}
    if top_k > 1:
        result[f"top{top_k}_accuracy"] = correct_k / count
    return result


def peak_memory(device) -> dict:
    """Peak memory so far: CUDA's max allocated on a GPU; the process's peak RSS on the CPU (so labelled)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_memory_mb": peak / 1e6, "peak_memory_kind": "cuda_max_allocated"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_memory_mb": rss_kb * 1024 / 1e6, "peak_memory_kind": "cpu_peak_rss_of_process"}


# ---- checkpoints: safetensors for tensors, JSON for the rest; written to a temp dir, then renamed ----


def save_checkpoint(out_dir: Path, model, optimizer, state: dict) -> None:
    tensors = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            tensors[f"param.{name}"] = p.detach()
            for key, value in optimizer.state.get(p, {}).items():  # AdamW: step, exp_avg, exp_avg_sq
                tensors[f"adam.{key}.{name}"] = value.reshape(-1) if value.dim() == 0 else value
    tensors["rng.cpu"] = torch.get_rng_state()
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    root = out_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".tmp-"))
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps(state, indent=2))
    final = root / f"step-{state['step']:08d}"
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)  # atomic: a checkpoint directory is complete or absent
    for old in sorted(root.glob("step-*"))[:-2]:  # keep the last two
        shutil.rmtree(old)


def load_checkpoint(out_dir: Path, model, optimizer, expected: dict) -> dict:
    candidates = sorted((out_dir / "checkpoints").glob("step-*"))
    if not candidates:
        raise UsageError(f"--resume: no checkpoint in {out_dir / 'checkpoints'}; run without --resume to start")
    path = candidates[-1]
    state = json.loads((path / "state.json").read_text())
    for key, value in expected.items():
        if state["run"].get(key) != value:
            raise UsageError(
                f"--resume: {path} was made with {key}={state['run'].get(key)!r}, this command has {value!r}; "
                "use the same arguments or another --output-dir"
            )
    tensors = load_file(str(path / "state.safetensors"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.copy_(tensors[f"param.{name}"])
                adam = {
                    key: tensors[f"adam.{key}.{name}"]
                    for key in ("step", "exp_avg", "exp_avg_sq")
                    if f"adam.{key}.{name}" in tensors
                }
                if adam:
                    adam["step"] = adam["step"].reshape(())
                    optimizer.state[p] = {k: v.to(p.device) for k, v in adam.items()}
    torch.set_rng_state(tensors["rng.cpu"])
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
    return state


def write_text(path: Path, text: str) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def trim_log(log_path: Path, last_step: int) -> None:
    """On resume, drop the log lines of steps after the checkpoint: they are about to be run again."""
    if log_path.exists():
        lines = [line for line in log_path.read_text().splitlines() if json.loads(line)["step"] <= last_step]
        write_text(log_path, "".join(line + "\n" for line in lines))


# ---- the run ----


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (UsageError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args) -> int:
    rank, world, device = setup_distributed(args.device)
    is_main = rank == 0
    torch.manual_seed(args.seed)  # adapter initialisation and dropout

    # -- model and data --
    model_name = args.model.rstrip("/").split("/")[-1]
    out_dir = Path(args.output_dir or f"runs/{args.method}-{model_name}")
    if not args.resume and ((out_dir / "metrics.json").exists() or (out_dir / "checkpoints").exists()):
        raise UsageError(f"{out_dir} already holds a run; pass --resume to continue it, or choose another --output-dir")
    tokenizer = minibert.load_tokenizer(args.model)
    qlora_on_cuda = args.method == "qlora" and device.type == "cuda"
    model = minibert.from_pretrained(args.model, dtype=torch.bfloat16 if qlora_on_cuda else None, device=device)
    check_args(args, model.config)
    blocks = load_blocks(args, tokenizer)
    vocab = data.MaskingVocab.from_tokenizer(tokenizer)
    valid, test = data.eval_masks(blocks["validation"], vocab), data.eval_masks(blocks["test"], vocab)

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

    # -- optimisation: AdamW over the adapters; no weight decay on SoRA's gates (they have their own L1) --
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if not n.endswith("gate")], "weight_decay": args.weight_decay},
        {"params": [p for n, p in params if n.endswith("gate")], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=args.lr)
    global_batch = args.batch_size * world
    steps_per_epoch = len(blocks["train"]) // global_batch
    if steps_per_epoch == 0:
        n_train = len(blocks["train"])
        raise UsageError(f"the training split has {n_train} blocks: fewer than one batch of {global_batch}")
    total_steps = args.epochs * steps_per_epoch
    if args.max_steps is not None:
        total_steps = min(total_steps, args.max_steps)

    objective = MaskedLMObjective(model)
    if args.compile:
        objective = torch.compile(objective)
    if world > 1:
        device_ids = [device] if device.type == "cuda" else None
        objective = torch.nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    run_identity = {
        "method": args.method,
        "model": args.model,
        "r": args.r,
        "max_seq_len": args.max_seq_len,
        "batch_size": args.batch_size,
        "world_size": world,
        "seed": args.seed,
    }
    step, best, last_validated = 0, {"loss": math.inf, "step": None}, None
    best_state = None
    best_state_path = out_dir / "checkpoints" / "best_state.safetensors"  # the best adapter, as trained
    train_time, eval_time, samples_seen = 0.0, 0.0, 0
    log_path = out_dir / "train_log.jsonl"
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if args.resume:
        state = load_checkpoint(out_dir, model, optimizer, run_identity)
        step, best = state["step"], state["best"]
        train_time, eval_time, samples_seen = state["train_time"], state["eval_time"], state["samples_seen"]
        if best["step"] is not None:
            best_state = load_file(str(best_state_path))
        if is_main:
            trim_log(log_path, step)
            print(f"resumed from step {step}", file=sys.stderr)

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
                    "train_time": train_time,
                    "eval_time": eval_time,
                    "samples_seen": samples_seen,
                },
            )

    def validate():
        nonlocal best, best_state, eval_time, last_validated
        start = time.perf_counter()
        result = evaluate_mlm(model, valid, args.eval_batch_size, device)
        eval_time += time.perf_counter() - start
        last_validated = step
        if result["loss"] < best["loss"] or best_state is None:
            best = {"loss": result["loss"], "step": step}
            best_state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
            best_state_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(best_state_path, lambda tmp: save_file(best_state, tmp))  # a resumed run needs it too
            methods.save_adapter(model, out_dir)
        tqdm.write(
            f"step {step}: validation loss {result['loss']:.4f}, perplexity {result['perplexity']:.2f}, "
            f"accuracy {result['accuracy']:.4f}" + (" (best)" if best["step"] == step else "")
        )
        with log_path.open("a") as f:
            f.write(json.dumps({"step": step, "split": "validation", **result}) + "\n")

    # -- the training loop --
    interrupted = False
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM like Ctrl-C
    bar = tqdm(total=total_steps, initial=step, disable=not is_main, desc=f"{args.method}", dynamic_ncols=True)
    try:
        while step < total_steps:
            start = time.perf_counter()
            epoch, index = divmod(step, steps_per_epoch)
            order = torch.randperm(len(blocks["train"]), generator=data.seeded_generator(args.seed, epoch))
            ids = blocks["train"][order[index * global_batch : (index + 1) * global_batch]]  # (G, T), same on all ranks
            batch = data.mask_tokens(ids, vocab, data.seeded_generator(args.seed, epoch, index))
            mine = slice(rank * args.batch_size, (rank + 1) * args.batch_size)  # this process's share
            input_ids, labels = batch["input_ids"][mine].to(device), batch["labels"][mine].to(device)
            lr = learning_rate(step, args.lr, args.warmup_steps, total_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr

            n_local = (labels != data.IGNORE).sum()
            n_global = all_reduce_sum(n_local.clone().float(), world)
            scale = n_local * world / n_global.clamp(min=1)  # mean over the global batch, whatever the split
            with bf16_autocast(device):
                loss = objective(input_ids, labels, scale)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_([p for _, p in params], 1.0)
            global_loss = all_reduce_sum(loss.detach().float(), world) / world
            if not (torch.isfinite(global_loss) and torch.isfinite(grad_norm)):
                raise FloatingPointError(f"step {step}: the loss is {global_loss.item()} (gradient norm {grad_norm})")
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if args.method == "sparse_lora":
                methods.proximal_step(model, lr)  # g <- sign(g) max(|g| - lr*λ, 0)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_time += time.perf_counter() - start
            samples_seen += global_batch
            step += 1

            tokens_per_s = samples_seen * args.max_seq_len / max(train_time, 1e-9)
            bar.set_postfix(loss=f"{global_loss.item():.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            bar.update(1)
            if is_main and (step % args.log_every == 0 or step == total_steps):
                with log_path.open("a") as f:
                    f.write(
                        json.dumps(
                            {
                                "step": step,
                                "split": "train",
                                "loss": global_loss.item(),
                                "lr": lr,
                                "grad_norm": grad_norm.item(),
                                "tokens_per_s": tokens_per_s,
                            }
                        )
                        + "\n"
                    )
            if is_main and args.eval_every and step % args.eval_every == 0:
                validate()
            if args.save_every and step % args.save_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        interrupted = True
    except FloatingPointError as e:
        bar.close()
        print(f"error: {e}; stopping. The last good checkpoint is kept in {out_dir / 'checkpoints'}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        bar.close()
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
        start = time.perf_counter()
        test_result = evaluate_mlm(model, test, args.eval_batch_size, device)
        eval_time += time.perf_counter() - start
        metrics = {
            "finished": True,
            "method": args.method,
            "base_model": args.model,
            "architecture": model.config.arch,
            "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("resume", "device", "cache_dir")},
            "target_modules": model.adapter_config.target_modules,
            "trainable_params": trainable_params,
            "total_params": total_params,
            "trainable_percent": 100 * trainable_params / total_params,
            "model_size_mb": model_size_mb,
            "steps": step,
            "epochs": step / steps_per_epoch,
            "train_blocks": len(blocks["train"]),
            "train_time_s": train_time,
            "eval_time_s": eval_time,
            "train_samples_per_s": samples_seen / train_time,
            "train_tokens_per_s": samples_seen * args.max_seq_len / train_time,
            **peak_memory(device),
            "best_step": best["step"],
            "validation_loss": best["loss"],
            "validation_perplexity": math.exp(best["loss"]),
            "test_loss": test_result["loss"],
            "test_perplexity": test_result["perplexity"],
            "test_accuracy": test_result["accuracy"],
            "test_masked_tokens": test_result["masked_tokens"],
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "world_size": world,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        if args.method == "sparse_lora":
            metrics["sparse_lora_gates"] = methods.gate_report(model)
        write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
        write_text(out_dir / "README.md", model_card(metrics))
        print(
            f"test perplexity {metrics['test_perplexity']:.3f}, accuracy {metrics['test_accuracy']:.4f}; "
            f"results in {out_dir}",
            file=sys.stderr,
        )
    if world > 1:
        check_replicas_agree(model, world)
        dist.destroy_process_group()
    return 0


def check_replicas_agree(model, world: int) -> None:
    """Data parallelism is only right if every process ends with the same adapter: compare them all."""
    mine = torch.cat([p.detach().float().reshape(-1) for p in model.parameters() if p.requires_grad])
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    if not all(torch.equal(everyone[0], other) for other in everyone[1:]):
        raise FloatingPointError("the processes ended with different adapters: the replicas diverged")


def model_card(m: dict) -> str:
    """The run's README.md: the reference card's fields, filled with measured values."""
    h = m["hyperparameters"]
    method_line = {
        "lora": "LoRA (Hu et al., ICLR 2022): h = W0 x + (alpha/r) B A x",
        "sparse_lora": "Sparse LoRA / SoRA (Ding et al., EMNLP 2023): gated LoRA whose gates are pruned to "
        "exact zeros by a proximal L1 step; saved as the pruned plain LoRA",
        "hira": "HiRA (Huang et al., ICLR 2025): h = W0 x + (W0 ⊙ B A) x",
        "qlora": "QLoRA (Dettmers et al., NeurIPS 2023): LoRA on an NF4 4-bit base",
    }[m["method"]]
    extra = ""
    if m["method"] == "sparse_lora":
        ranks = [g["rank"] for g in m["sparse_lora_gates"]]
        zero = 1 - sum(ranks) / sum(g["r"] for g in m["sparse_lora_gates"])
        extra = f"- **Sparsity:** {100 * zero:.1f}% of gates exactly zero (λ = {h['sparse_lambda']}); ranks {ranks}\n"
    if m["method"] == "qlora":
        extra = f"- **Quantisation:** NF4, block size {h['blocksize']}, double quant. {not h['no_double_quant']}\n"
    on_gpu = m["peak_memory_kind"] == "cuda_max_allocated"
    memory = "peak GPU memory allocated" if on_gpu else "peak RSS of the CPU process"
    targets = ", ".join(f"`{t}`" for t in m["target_modules"]) if isinstance(m["target_modules"], list) else "regex"
    steps = f"{m['steps']} steps of {h['batch_size']} × {m['world_size']} blocks of {h['max_seq_len']} tokens"
    schedule = f"{h['warmup_steps']} warm-up steps, then linear decay"
    return f"""---
base_model: {m["base_model"]}
library_name: peft
tags: [{m["method"]}, masked-lm, wikitext-2]
datasets: [wikitext]
metrics: [perplexity, accuracy]
---

# {m["method"]} — {m["base_model"]} fine-tuned on WikiText-2 (masked LM)

{method_line}. Trained with minibert-peft (a from-scratch PyTorch implementation); the adapter
is in PEFT's format.

## Training configuration
- **Base model:** {m["base_model"]} ({m["architecture"]})
- **Rank (r):** {h["r"]}
- **Alpha:** {h["alpha"]}
- **Target modules:** {targets}
- **Dropout:** {h["dropout"]}
{extra}- **Epochs:** {m["epochs"]:.2f} ({steps})
- **Learning rate:** {h["lr"]}, AdamW, weight decay {h["weight_decay"]}, {schedule}
- **Seed:** {h["seed"]}

## Results (measured)
| | |
| --- | --- |
| Total parameters | {m["total_params"]:,} |
| Trainable parameters | {m["trainable_params"]:,} ({m["trainable_percent"]:.3f}%) |
| Model size in memory | {m["model_size_mb"]:.1f} MB |
| Test perplexity (masked tokens) | {m["test_perplexity"]:.3f} |
| Test masked-token accuracy | {m["test_accuracy"]:.4f} |
| Validation perplexity (best, step {m["best_step"]}) | {m["validation_perplexity"]:.3f} |
| Training time | {m["train_time_s"]:.1f} s |
| Training throughput | {m["train_samples_per_s"]:.1f} samples/s, {m["train_tokens_per_s"]:,.0f} tokens/s |
| Memory | {m["peak_memory_mb"]:.0f} MB ({memory}) |
| Device | {m["device"]} × {m["world_size"]} |

Perplexity is exp of the mean cross-entropy over the masked tokens of the test split, with the same
fixed masks for every method (15% of the tokens; 80% [MASK], 10% random, 10% unchanged).

## Usage
With PEFT (`transformers.AutoModelForMaskedLM`, `peft.PeftModel`):
`PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained("{m["base_model"]}"), "path/to/this/directory")`.
With this project: `methods.load_adapter(minibert.from_pretrained("{m["base_model"]}"), "path/to/this/directory")`
(for QLoRA, quantise the base first with `methods.qlora.quantize_linears`).
"""


if __name__ == "__main__":
    sys.exit(main())
