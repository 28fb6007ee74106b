"""Dequantisation speed: quant.dequantize_nf4 (pure PyTorch) against bitsandbytes' compiled CPU kernel.

    python -m tests.benchmarks.bench_nf4 [--threads 2] [--rounds 200]      (from the repository root)

Both dequantise the same weights (NF4, blocksize 64, double quantisation) to float32; the two are timed
alternately in one run and the median of each is reported. Absolute times depend on the machine; the
ratio is what to compare. Not a test: it asserts nothing about time.
"""

import argparse
import functools
import statistics
import time

import bitsandbytes.functional as bnb
import torch

import quant


def elapsed_ms(fn):
    start = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads for both (default 2)")
    parser.add_argument("--rounds", type=int, default=200, help="timed calls of each, alternating (default 200)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, blocksize 64, double quantisation, float32 out")
    print(f"{'weight':>10} | {'ours ms':>8} | {'bnb ms':>8} | ours/bnb")
    for shape in [(768, 768), (3072, 768)]:
        w = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        ours = quant.quantize_nf4(w, blocksize=64, double_quant=True)
        packed, state = bnb.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        assert torch.equal(ours.packed, packed.reshape(-1)), "the two disagree: not comparing like with like"
        theirs = functools.partial(bnb.dequantize_4bit, packed, state)
        for _ in range(10):  # warm-up
            ours.dequantize()
            theirs()
        ours_times, bnb_times = [], []
        for _ in range(args.rounds):
            ours_times.append(elapsed_ms(ours.dequantize))
            bnb_times.append(elapsed_ms(theirs))
        a, b = statistics.median(ours_times), statistics.median(bnb_times)
        print(f"{'x'.join(map(str, shape)):>10} | {a:8.3f} | {b:8.3f} | {a / b:.2f}x")


if __name__ == "__main__":
    main()
