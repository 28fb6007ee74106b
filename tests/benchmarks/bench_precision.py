"""A training step in fp32 against bf16 autocast (train.py --precision), and AdamW's loop against its fused
kernel, side by side on this machine's CPU.

    python -m tests.benchmarks.bench_precision [--arch minilm] [--threads 1] [--rounds 7] [--seq 64]

Workload: a sequence classifier of the architecture's shape with random weights (minilm: all-MiniLM-L6-v2's
6 x 384, the GLUE suite's encoder; distilbert; bert), a batch of 16 sequences of --seq tokens (MRPC's
pairs are ~60), dropout on, cross-entropy, backward, gradient clipping and an AdamW step: train.py's
step. Variants, each for full fine-tuning and for LoRA (r 8 on query and value):
  fp32 loop    fp32 matmuls, AdamW's default for-loop over the parameters (train.py before --precision)
  fp32 fused   fp32 matmuls, AdamW(fused=True) (train.py's optimizer now)
  bf16 fused   bf16 matmuls under autocast, fp32 weights, fused AdamW (train.py --precision bf16)
After warm-up the variants alternate for --rounds rounds; medians are printed with their ratio to fp32
loop. A plain matmul in both precisions says what the hardware offers: bf16 is fast only where the CPU
has AMX (Intel Xeon since Sapphire Rapids); elsewhere bf16 may well be slower. Not a test: it asserts
nothing about time.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import methods
import minibert
from training.device import autocast

SHAPES = {  # (layers, hidden, heads, intermediate)
    "minilm": (6, 384, 12, 1536),
    "distilbert": (6, 768, 12, 3072),
    "bert": (12, 768, 12, 3072),
}
VARIANTS = {"fp32 loop": ("fp32", False), "fp32 fused": ("fp32", True), "bf16 fused": ("bf16", True)}
CPU = torch.device("cpu")


def build(arch: str, method: str, precision: str, fused: bool, batch: dict):
    """A train step of a fresh model: () -> loss."""
    layers, hidden, heads, intermediate = SHAPES[arch]
    config = minibert.BertConfig(num_layers=layers, hidden_size=hidden, num_heads=heads,
                                 intermediate_size=intermediate, num_labels=2)  # fmt: skip
    torch.manual_seed(0)
    model = methods.apply(minibert.BertClassifier(config), method, r=8, target_modules=["query", "value"]).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=fused)

    def step():
        with autocast(CPU, precision):
            loss = F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]).float(), batch["labels"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    return step


def matmul_gflops(dtype, n: int = 1024, rounds: int = 10) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(rounds):
        a @ b
    return 2 * n**3 * rounds / (time.perf_counter() - start) / 1e9


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", choices=SHAPES, default="minilm", help="the model's shape (default minilm)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the GLUE suite's)")
    p.add_argument("--rounds", type=int, default=7, help="timed rounds of every variant (default 7)")
    p.add_argument("--seq", type=int, default=64, help="tokens per sequence (default 64)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cpuinfo = Path("/proc/cpuinfo")
    flags = cpuinfo.read_text() if cpuinfo.exists() else ""  # Linux: the CPU's feature flags
    print(f"{args.arch}, batch 16 x {args.seq}, {args.threads} thread(s); CPU has AMX: {'amx_bf16' in flags}")
    print(f"matmul 1024^3: fp32 {matmul_gflops(torch.float32):.0f} GFLOP/s, "
          f"bf16 {matmul_gflops(torch.bfloat16):.0f} GFLOP/s")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (16, args.seq), generator=g)  # (B, T)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (16,))}
    print("\n| method | " + " | ".join(f"{v} ms/step" for v in VARIANTS) + " | bf16 fused vs fp32 loop |")
    print("|---|" + "---|" * (len(VARIANTS) + 1))
    for method in ("full", "lora"):
        steps = {name: build(args.arch, method, *variant, batch) for name, variant in VARIANTS.items()}
        times = {name: [] for name in VARIANTS}
        for step in steps.values():  # warm-up
            step(), step()
        for _ in range(args.rounds):
            for name, step in steps.items():
                start = time.perf_counter()
                step()
                times[name].append(time.perf_counter() - start)
        median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        cells = " | ".join(f"{median[name]:.0f} ({median['fp32 loop'] / median[name]:.2f}x)" for name in VARIANTS)
        print(f"| {method} | {cells} | {median['fp32 loop'] / median['bf16 fused']:.2f}x faster |")


if __name__ == "__main__":
    main()
