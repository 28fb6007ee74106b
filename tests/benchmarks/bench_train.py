"""Training and evaluation speed and memory: minibert + our methods against transformers + PEFT, side by side.

    python -m tests.benchmarks.bench_train [--archs distilbert,bert] [--rounds 5] [--threads 2]

Workload: the architecture's full-size shapes with random weights, LoRA (and DoRA) r=8 on the query and
value projections, a batch of 8 x 128 tokens with 15% of them masked, fp32. Ours and theirs are built
from the same weights and the same adapter, and the script first checks that their losses agree (it
compares like with like): LoRA and DoRA against PEFT, full fine-tuning (every weight trains) against
transformers alone. Then, after warm-up, it alternates every variant for --rounds rounds and reports medians:
  train step   forward, masked-LM loss, backward, AdamW step (dropout on)
  eval         masked-LM loss without gradients
  memory       peak resident memory of one training step above a bare `import torch` process, each
               measured in its own process (Linux VmHWM, reset just before the step; glibc told to return
               freed memory at once, so the figure follows what is really allocated)
  GFLOP/s      floating-point operations of our training step (torch.utils.flop_counter) per second,
               against a plain fp32 matmul on this machine: the gap to the hardware limit
and our QLoRA, DoRA and full fine-tuning against our LoRA. Absolute times depend on the machine; the ratios
are what to compare.
Not a test: it asserts nothing about time.
"""

import argparse
import gc
import multiprocessing
import os
import statistics
import tempfile
import time

import peft
import torch
import transformers
from torch.utils.flop_counter import FlopCounterMode

import methods
import minibert

CONFIGS = {
    "distilbert": (transformers.DistilBertConfig, "DistilBertForMaskedLM", ["q_lin", "v_lin"]),
    "bert": (transformers.BertConfig, "BertForMaskedLM", ["query", "value"]),
}


def make_checkpoint(arch: str, directory: str) -> None:
    config_cls, model_cls, _ = CONFIGS[arch]
    torch.manual_seed(0)
    getattr(transformers, model_cls)(config_cls()).save_pretrained(directory)


def make_batch(batch: int, seq: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    chosen = torch.rand(ids.shape, generator=g) < 0.15
    return {"input_ids": ids.masked_fill(chosen, 103), "labels": torch.where(chosen, ids, -100)}


# (who, method): ours or theirs (transformers + PEFT; transformers alone for full fine-tuning)
IMPLS = [("ours", "lora"), ("theirs", "lora"), ("ours", "qlora"), ("ours", "dora"), ("theirs", "dora"),
         ("ours", "full"), ("theirs", "full")]  # fmt: skip


def build(impl: tuple[str, str], arch: str, checkpoint: str, adapter_dirs: dict):
    """(model, train_step, eval_loss) for impl, a (who, method) of IMPLS; adapter_dirs: method -> the adapter."""
    who, method = impl
    targets = CONFIGS[arch][2]
    if who == "theirs":
        model = getattr(transformers, CONFIGS[arch][1]).from_pretrained(checkpoint)
        if method != "full":
            model = peft.PeftModel.from_pretrained(model, adapter_dirs[method], is_trainable=True)
        loss_fn = lambda b: model(input_ids=b["input_ids"], labels=b["labels"]).loss  # noqa: E731
    else:
        model = minibert.from_pretrained(checkpoint)
        if method in ("qlora", "full"):
            methods.apply(model, method, **({} if method == "full" else {"r": 8, "target_modules": targets}))
        else:
            methods.load_adapter(model, adapter_dirs[method])
        loss_fn = lambda b: model.mlm_loss(b["input_ids"], b["labels"])  # noqa: E731
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def train_step(b):
        model.train()
        loss = loss_fn(b)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    @torch.no_grad()
    def eval_loss(b):
        model.eval()
        return loss_fn(b)

    return model, train_step, eval_loss


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def step_memory(impl, arch: str, checkpoint: str, adapter_dirs: dict, batch: dict, threads: int) -> float:
    """MB: peak resident memory of one training step above a bare process (run in a fresh process)."""
    torch.set_num_threads(threads)
    bare = rss_kb("VmRSS")
    _, train_step, _ = build(impl, arch, checkpoint, adapter_dirs)
    train_step(batch)  # the optimizer state now exists
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    train_step(batch)
    return (rss_kb("VmHWM") - bare) / 1024


def measure_memory(impl, arch, checkpoint, adapter_dirs, batch, threads) -> float:
    os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"  # big blocks straight from and back to the kernel
    try:
        with multiprocessing.get_context("spawn").Pool(1) as pool:
            return pool.apply(step_memory, (impl, arch, checkpoint, adapter_dirs, batch, threads))
    finally:
        del os.environ["MALLOC_MMAP_THRESHOLD_"]


def matmul_gflops(rounds: int = 10, n: int = 2048) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    return 2 * n**3 / statistics.median(timed(torch.mm, a, b) for _ in range(rounds)) / 1e9


def bench(arch: str, args, batch: dict) -> list[str]:
    lines = []
    with tempfile.TemporaryDirectory() as checkpoint, tempfile.TemporaryDirectory() as adapters:
        make_checkpoint(arch, checkpoint)
        adapter_dirs = {}
        for method in ("lora", "dora"):  # the same adapter for ours and theirs
            seed_model = methods.apply(minibert.from_pretrained(checkpoint), method, target_modules=CONFIGS[arch][2])
            adapter_dirs[method] = methods.save_adapter(seed_model, f"{adapters}/{method}")
        del seed_model
        impls = {impl: build(impl, arch, checkpoint, adapter_dirs) for impl in IMPLS}
        for method in ("lora", "dora", "full"):
            ours, theirs = impls["ours", method][2](batch).item(), impls["theirs", method][2](batch).item()
            assert abs(ours - theirs) < 1e-4, f"{method}: losses differ: {ours} vs {theirs}"
            lines.append(f"{arch} {method}: losses agree before timing: ours {ours:.6f}, reference {theirs:.6f}")
        times = {(impl, kind): [] for impl in impls for kind in ("train", "eval")}
        for _ in range(2):  # warm-up
            for _, train_step, eval_loss in impls.values():
                train_step(batch)
                eval_loss(batch)
        for _ in range(args.rounds):
            for impl, (_, train_step, eval_loss) in impls.items():
                times[impl, "train"].append(timed(train_step, batch))
                times[impl, "eval"].append(timed(eval_loss, batch))
        t = {key: statistics.median(value) for key, value in times.items()}
        with FlopCounterMode(display=False) as counter:
            impls["ours", "lora"][1](batch)
        flops = counter.get_total_flops()
        del impls
        gc.collect()
        memory = {impl: measure_memory(impl, arch, checkpoint, adapter_dirs, batch, args.threads) for impl in IMPLS}
    names = {"lora": "LoRA", "dora": "DoRA", "full": "full fine-tuning", "qlora": "QLoRA"}
    header = f"| {arch}: ours vs the reference | train step s, ours / theirs | theirs/ours | eval s, ours / theirs "
    header += "| theirs/ours | peak memory MB, ours / theirs | ours/theirs |"
    lines += ["", header, "|---|---|---|---|---|---|---|"]
    for method in ("lora", "dora", "full"):
        ours, theirs = ("ours", method), ("theirs", method)
        lines.append(
            f"| {names[method]} | {t[ours, 'train']:.3f} / {t[theirs, 'train']:.3f} | "
            f"**{t[theirs, 'train'] / t[ours, 'train']:.2f}x** | {t[ours, 'eval']:.3f} / {t[theirs, 'eval']:.3f} | "
            f"{t[theirs, 'eval'] / t[ours, 'eval']:.2f}x | {memory[ours]:.0f} / {memory[theirs]:.0f} | "
            f"{memory[ours] / memory[theirs]:.2f}x |"
        )
    lora = ("ours", "lora")
    lines += ["", f"| {arch}: each of ours vs our LoRA | train step s | x LoRA | eval s | x LoRA | peak memory MB "
              "| x LoRA |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for method in ("lora", "qlora", "dora", "full"):
        impl = ("ours", method)
        lines.append(
            f"| {names[method]} | {t[impl, 'train']:.3f} | {t[impl, 'train'] / t[lora, 'train']:.2f}x | "
            f"{t[impl, 'eval']:.3f} | {t[impl, 'eval'] / t[lora, 'eval']:.2f}x | {memory[impl]:.0f} | "
            f"{memory[impl] / memory[lora]:.2f}x |"
        )
    lines += ["", f"{arch}: our LoRA training step does {flops / 1e9:.1f} GFLOP in {t[lora, 'train']:.3f} s = "
              f"{flops / 1e9 / t[lora, 'train']:.1f} GFLOP/s"]  # fmt: skip
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="distilbert,bert", help="comma-separated: distilbert, bert")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after 2 warm-up rounds (default 5)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, for all (default 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per batch (default 8)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (default 128)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batch = make_batch(args.batch_size, args.seq_len)
    peak = matmul_gflops()
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}"
    print(f"{versions}; {args.threads} threads; batch {args.batch_size} x {args.seq_len}, 15% masked, fp32, r=8")
    print(f"plain fp32 matmul (2048^3) on this machine: {peak:.1f} GFLOP/s\n")
    for arch in args.archs.split(","):
        for line in bench(arch, args, batch):
            print(line)
        print()
    print(f"(GFLOP/s above vs the {peak:.1f} GFLOP/s of a plain fp32 matmul measured in this run)")


if __name__ == "__main__":
    main()
