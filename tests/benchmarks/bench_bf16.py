"""The training step the results are trained in, bf16 autocast, ours against transformers+PEFT under the
same autocast, in fp32 beside it; and where our bf16 step's time goes.

    python -m tests.benchmarks.bench_bf16 [--archs minilm,distilbert,bert] [--rounds 5] [--threads 2]
    python -m tests.benchmarks.gpu_check        # the same comparison on a GPU, among its other checks

Workload: the GLUE suite's step on a sequence classifier of the architecture's shape (minilm: 6 x 384, the
suite's encoder; distilbert; bert), random weights that ours and theirs load from one transformers
checkpoint, a batch of 16 x 128 tokens, dropout on, cross-entropy, backward, clipping at 1.0, fused AdamW.
Methods: LoRA and DoRA (r 8 on query and value; theirs: PEFT on transformers' model, loading our adapter
file, so both start from the same adapter) and full fine-tuning (theirs: transformers alone). Every model
steps in fp32 and in bf16 autocast (fp32 weights) alternately, after warm-up, for --rounds rounds; the
medians are printed with theirs/ours, and our GFLOP/s (torch.utils.flop_counter) beside what this machine's
matmuls deliver at the model's own GEMM shapes in that precision. Last, a torch.profiler table of one bf16
LoRA step of ours: the ops that take the time. Not a test: it asserts nothing about time.
"""

import argparse
import statistics
import tempfile
import time

import peft
import torch
import torch.nn.functional as F
import transformers
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

import methods
import minibert
from tests.benchmarks.bench_precision import SHAPES
from training.device import autocast

PRECISIONS = ("fp32", "bf16")
METHODS = ("lora", "dora", "full")
TARGETS = {"minilm": ["query", "value"], "distilbert": ["q_lin", "v_lin"], "bert": ["query", "value"]}


def make_checkpoint(arch: str, directory: str) -> None:
    """A transformers sequence classifier of the architecture's shape, random weights, saved to `directory`."""
    layers, hidden, heads, intermediate = SHAPES[arch]
    torch.manual_seed(0)
    if arch == "distilbert":
        model = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(num_labels=2))
    else:
        config = transformers.BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads,
                                         intermediate_size=intermediate, num_labels=2)  # fmt: skip
        model = transformers.BertForSequenceClassification(config)
    model.save_pretrained(directory)


def make_batch(device) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (16, 128), generator=g)  # (B, T)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.randint(0, 2, (16,), generator=g),
    }
    return {key: value.to(device) for key, value in batch.items()}


def timed(device, fn, *args) -> float:
    """Seconds fn(*args) takes, the GPU's queued work included."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def build(who: str, method: str, checkpoint: str, adapters: dict, device):
    """(loss(batch), step(batch, precision)) of one implementation: train.py's step, fused AdamW."""
    if who == "theirs":
        model = transformers.AutoModelForSequenceClassification.from_pretrained(checkpoint).to(device)
        if method != "full":
            model = peft.PeftModel.from_pretrained(model, adapters[method], is_trainable=True)

        def loss_of(b):
            return model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
    else:
        model = minibert.from_pretrained(checkpoint, num_labels=2, device=device)
        if method == "full":
            methods.apply(model, "full")
        else:
            methods.load_adapter(model, adapters[method])

        def loss_of(b):
            return F.cross_entropy(model(b["input_ids"], attention_mask=b["attention_mask"]).float(), b["labels"])

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-6, fused=True)

    def step(b, precision):
        model.train()
        with autocast(device, precision):
            loss = loss_of(b)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    @torch.no_grad()
    def eval_loss(b):
        model.eval()
        return loss_of(b).item()

    return eval_loss, step


def gemm_rate(arch: str, dtype: torch.dtype, device, rounds: int = 10) -> float:
    """GFLOP/s of this machine's matmuls at the model's GEMM shapes (16 x 128 tokens through the attention
    projections and both feed-forward layers), all together: their FLOPs over their time."""
    _, hidden, _, intermediate = SHAPES[arch]
    shapes = [(2048, hidden, hidden), (2048, hidden, intermediate), (2048, intermediate, hidden)]  # (M, K, N)
    pairs = [
        (torch.randn(m, k, device=device).to(dtype), torch.randn(k, n, device=device).to(dtype)) for m, k, n in shapes
    ]
    for a, b in pairs:
        a @ b  # warm-up
    seconds = sum(statistics.median(timed(device, torch.mm, a, b) for _ in range(rounds)) for a, b in pairs)
    return sum(2 * m * k * n for m, k, n in shapes) / seconds / 1e9


def bench(arch: str, rounds: int, device) -> tuple[list[str], str]:
    """The table of one architecture, and the profile of our bf16 LoRA step."""
    batch = make_batch(device)
    rates = {"fp32": gemm_rate(arch, torch.float32, device), "bf16": gemm_rate(arch, torch.bfloat16, device)}
    lines = [f"{arch}: matmuls at the model's GEMM shapes: fp32 {rates['fp32']:.0f} GFLOP/s, "
             f"bf16 {rates['bf16']:.0f} GFLOP/s"]  # fmt: skip
    with tempfile.TemporaryDirectory() as checkpoint, tempfile.TemporaryDirectory() as adapter_root:
        make_checkpoint(arch, checkpoint)
        adapters = {}
        for method in ("lora", "dora"):  # one adapter file, loaded by both
            model = methods.apply(minibert.from_pretrained(checkpoint, num_labels=2, device=device), method, r=8,
                                  target_modules=TARGETS[arch])  # fmt: skip
            adapters[method] = methods.save_adapter(model, f"{adapter_root}/{method}")
        impls = {(who, m): build(who, m, checkpoint, adapters, device) for m in METHODS for who in ("ours", "theirs")}
        for m in METHODS:
            ours, theirs = impls["ours", m][0](batch), impls["theirs", m][0](batch)
            assert abs(ours - theirs) < 1e-4, f"{arch} {m}: the losses differ ({ours} vs {theirs}): unlike things"
        times = {(impl, p): [] for impl in impls for p in PRECISIONS}
        for _ in range(2):  # warm-up
            for (_, step), p in [(impl, p) for impl in impls.values() for p in PRECISIONS]:
                step(batch, p)
        for _ in range(rounds):
            for impl, (_, step) in impls.items():
                for p in PRECISIONS:
                    times[impl, p].append(timed(device, step, batch, p))
        t = {key: statistics.median(value) for key, value in times.items()}
        flops = {}
        for m in METHODS:
            with FlopCounterMode(display=False) as counter:
                impls["ours", m][1](batch, "fp32")
            flops[m] = counter.get_total_flops()
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            impls["ours", "lora"][1](batch, "bf16")
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=14)
    lines += ["", f"| {arch} | precision | ours s/step | theirs s/step | theirs/ours | ours GFLOP/s | "
              "of the GEMM-shape rate |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for m in METHODS:
        for p in PRECISIONS:
            ours, theirs = t[("ours", m), p], t[("theirs", m), p]
            rate = flops[m] / ours / 1e9
            lines.append(f"| {m} | {p} | {ours:.3f} | {theirs:.3f} | **{theirs / ours:.2f}x** | {rate:.0f} | "
                         f"{100 * rate / rates[p]:.0f}% |")  # fmt: skip
    return lines, table


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="minilm,distilbert,bert", help="comma-separated: minilm, distilbert, bert")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds after 2 warm-up rounds (default 5)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads, for all (default 2)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}; "
          f"{args.threads} threads; batch 16 x 128; fused AdamW; r 8 on query and value\n")  # fmt: skip
    for arch in args.archs.split(","):
        lines, table = bench(arch, args.rounds, torch.device("cpu"))
        print("\n".join(lines) + "\n")
        print(f"{arch}: where our bf16 LoRA step's time goes (torch.profiler, self CPU time):\n{table}")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s)")
