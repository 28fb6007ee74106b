"""The device side of a run: mixed precision and the peak memory it reports.

Under `--precision bf16` the matmuls run in bf16 under autocast while the weights stay in fp32
(Micikevicius et al., "Mixed Precision Training", ICLR 2018, Section 3, with bf16 instead of fp16 so no
loss scaling is needed); LayerNorm, softmax and the losses stay in fp32. `auto` is bf16 on CUDA and fp32
on the CPU: most CPUs run bf16 matmuls slower than fp32, and fp32 is what the tests compare with the
reference libraries. CPUs with AMX (Intel Xeon since Sapphire Rapids) are the exception: there a bf16
matmul is about eight times as fast as an fp32 one, and a training step 1.6-1.8x
(LoRA 1.61x, full fine-tuning 1.79x against fp32 with the same fused AdamW; docs/performance.md).

`--device` is checked against what this torch has before any work: a CPU-only build asked for CUDA, or
a name torch does not know, is one line naming the devices there are.
"""

import sys
import time

import torch

try:
    import resource
except ImportError:  # Windows: no peak RSS from the standard library; everything else works
    resource = None


class DeviceError(Exception):
    """--device names a device this machine or this build of torch does not have."""


def available_devices() -> list[str]:
    return ["cpu", *(f"cuda:{i}" for i in range(torch.cuda.device_count()))]


def choose_device(flag: str | None) -> torch.device:
    """The device --device names (None: CUDA if there is one, else the CPU), checked (see the module doc)."""
    if flag is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = ", ".join(available_devices())
    try:
        device = torch.device(flag)
    except RuntimeError:
        raise DeviceError(f"--device {flag}: not a device name; the devices here are {here}") from None
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {flag}: minibert runs on cpu or cuda; the devices here are {here}")
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "this torch is a CPU-only build" if torch.version.cuda is None else "no GPU is visible"
        raise DeviceError(f"--device {flag}: {build}; the devices here are {here}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"--device {flag}: no such GPU; the devices here are {here}")
    return device


PRECISIONS = ("auto", "fp32", "bf16")  # the choices of --precision
PRECISION_HELP = (
    "matmuls in fp32, or in bf16 under autocast with fp32 weights (default auto: bf16 on CUDA, fp32 "
    "on the CPU; bf16 is faster only on CPUs with AMX)"
)  # the flag's help in every script


def choose_precision(flag: str, device: torch.device) -> str:
    """What --precision means on this device: "fp32" or "bf16" ("auto": bf16 on CUDA, fp32 on the CPU)."""
    if flag == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return flag


def autocast(device: torch.device, precision: str):
    """bf16 autocast when precision is "bf16" (matmuls in bf16, fp32 weights); a no-op context for "fp32"."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def elapsed(start: float, device: torch.device) -> float:
    """Seconds since `start` (time.perf_counter()), once the GPU has finished the work queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def peak_memory(device) -> dict:
    """Peak memory so far: CUDA's max allocated on a GPU; the process's peak RSS on the CPU (so labelled);
    None on Windows's CPU, which has no `resource` module."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_memory_mb": peak / 1e6, "peak_memory_kind": "cuda_max_allocated"}
    if resource is None:
        return {"peak_memory_mb": None, "peak_memory_kind": "not_measured"}
    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit
    return {"peak_memory_mb": peak / 1e6, "peak_memory_kind": "cpu_peak_rss_of_process"}
