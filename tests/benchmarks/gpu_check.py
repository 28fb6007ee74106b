"""GPU check: bf16 parity, training speed, inference throughput and peak memory per method, on CUDA.

    python -m tests.benchmarks.gpu_check                      # on a CUDA machine; about 3 minutes on one H200
    python -m tests.benchmarks.gpu_check --device cpu --small # a smoke run of the script itself, tiny shapes

Random weights at the full shapes of distilbert-base-uncased and bert-base-uncased (speed and memory do
not depend on the values). It prints:
  1. parity: max |logits_bf16 - logits_fp32| and their cosine, our model under bf16 autocast;
  2. training: steps/s of LoRA at batch 16 x 128 (bf16 autocast, fp32 adapters), extrapolated to the
     full 3-epoch WikiText-2 run (3 x ceil(train blocks / 16) steps; --train-blocks, default the count
     our packing gives for wikitext-2-raw-v1 with the bert-base-uncased tokenizer at 128 tokens);
  3. inference: samples/s of the masked-LM loss at batch 256;
  4. peak memory (torch.cuda.max_memory_allocated) of a training step for LoRA, Sparse LoRA, HiRA, QLoRA;
  5. the GLUE suite's step (a classifier, batch 16 x 128) in fp32 and bf16, ours against transformers+PEFT,
     with our GFLOP/s and a profile of our bf16 LoRA step: tests/benchmarks/bench_bf16.py, on this device
     (--small: MiniLM's shape alone, one round).
Targets on one H200: the distilbert LoRA run in <= 60 s, >= 10,000 inference samples/s, LoRA peak
memory <= 1 GB, and QLoRA's peak below LoRA's.
"""

import argparse
import math
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
import transformers

import methods
import minibert
from tests.benchmarks import bench_bf16
from tests.benchmarks.bench_train import make_batch
from training.device import autocast

WIKITEXT2_TRAIN_BLOCKS = 20_000  # ≈ 2.09M words x ~1.2 WordPieces / 126 per block; --train-blocks for the exact count


def checkpoint(arch: str, small: bool, directory: str) -> str:
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128) if small else {}
    if arch == "distilbert":
        size = {"dim": 64, "n_layers": 2, "n_heads": 4, "hidden_dim": 128} if small else {}
        model = transformers.DistilBertForMaskedLM(transformers.DistilBertConfig(**size))
    else:
        model = transformers.BertForMaskedLM(transformers.BertConfig(**size))
    model.save_pretrained(directory)
    return directory


def batch(n: int, seq: int, device) -> dict:
    return {key: value.to(device) for key, value in make_batch(n, seq).items()}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def adapted(directory: str, method: str, device, compile_model: bool):
    dtype = torch.bfloat16 if method in methods.QUANTISED and device.type == "cuda" else None  # the QLoRA recipe
    model = minibert.from_pretrained(directory, dtype=dtype, device=device)
    methods.apply(model, method, **({} if method == "full" else {"r": 8, "alpha": 16, "dropout": 0.1}))
    return torch.compile(model) if compile_model else model


def train_steps_per_s(model, b, device, steps: int) -> float:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def step():
        with autocast(device, "bf16"):
            loss = model.mlm_loss(b["input_ids"], b["labels"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    for _ in range(3):
        step()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke run")
    p.add_argument("--small", action="store_true", help="tiny shapes: check that the script runs")
    p.add_argument("--steps", type=int, default=50, help="timed training steps per model (default 50)")
    p.add_argument("--train-blocks", type=int, default=WIKITEXT2_TRAIN_BLOCKS, help="WikiText-2 train blocks")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd LoRA training")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name(device)}, torch {torch.__version__}")
    steps_full_run = 3 * math.ceil(args.train_blocks / 16)
    for arch in ("distilbert", "bert"):
        with tempfile.TemporaryDirectory() as directory:
            checkpoint(arch, args.small, directory)
            base = minibert.from_pretrained(directory, device=device)
            b16 = batch(16, 128, device)
            with torch.no_grad():
                fp32 = base(b16["input_ids"]).float()
                with autocast(device, "bf16"):
                    bf16 = base(b16["input_ids"]).float()
            cosine = F.cosine_similarity(fp32.double().flatten(), bf16.double().flatten(), dim=0).item()
            print(f"[{arch}] bf16 vs fp32 logits: max |Δ| {(fp32 - bf16).abs().max().item():.4f} "
                  f"(logits up to {fp32.abs().max().item():.2f}), cosine {cosine:.6f}")  # fmt: skip

            rate = train_steps_per_s(adapted(directory, "lora", device, False), b16, device, args.steps)
            print(f"[{arch}] LoRA training: {rate:.1f} steps/s at batch 16 x 128 -> full 3-epoch WikiText-2 run "
                  f"({steps_full_run} steps) in {steps_full_run / rate:.0f} s")  # fmt: skip
            if args.compile:
                rate_c = train_steps_per_s(adapted(directory, "lora", device, True), b16, device, args.steps)
                print(f"[{arch}] LoRA training, torch.compile: {rate_c:.1f} steps/s -> {steps_full_run / rate_c:.0f} s")

            b256 = batch(256, 128, device)
            base.eval()
            times = []
            with torch.no_grad(), autocast(device, "bf16"):
                for i in range(13):
                    sync(device)
                    start = time.perf_counter()
                    base.mlm_loss(b256["input_ids"], b256["labels"])
                    sync(device)
                    if i >= 3:
                        times.append(time.perf_counter() - start)
            print(f"[{arch}] inference (masked-LM loss, batch 256): {256 / statistics.median(times):,.0f} samples/s")
            del base

            for method in ("lora", "sparse_lora", "hira", "qlora", "dora", "qdora", "full"):
                model = adapted(directory, method, device, False)
                train_steps_per_s(model, b16, device, 3)
                peak = torch.cuda.max_memory_allocated(device) / 1e6 if device.type == "cuda" else float("nan")
                print(f"[{arch}] {method:12s} training-step peak memory: {peak:,.0f} MB")
                del model
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    for arch in ("minilm",) if args.small else ("minilm", "distilbert", "bert"):
        lines, table = bench_bf16.bench(arch, 1 if args.small else 10, device)
        print("\n".join(lines) + f"\n\n[{arch}] where our bf16 LoRA step's time goes:\n{table}")


if __name__ == "__main__":
    main()
