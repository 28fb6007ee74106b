"""The device side of a run: mixed precision and the peak memory it reports.

On CUDA the matmuls run in bf16 under autocast while the trainable weights stay in fp32 (Micikevicius
et al., "Mixed Precision Training", ICLR 2018, Section 3, with bf16 instead of fp16 so no loss scaling
is needed). CPUs are slow at bf16 matmuls, so there autocast is off.

`--device` is checked against what this torch has before any work: a CPU-only build asked for CUDA, or
a name torch does not know, is one line naming the devices there are.
"""

import resource

import torch


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


def bf16_autocast(device):
    """bf16 autocast on CUDA (matmuls in bf16, fp32 master weights); a no-op context on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def peak_memory(device) -> dict:
    """Peak memory so far: CUDA's max allocated on a GPU; the process's peak RSS on the CPU (so labelled)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        return {"peak_memory_mb": peak / 1e6, "peak_memory_kind": "cuda_max_allocated"}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"peak_memory_mb": rss_kb * 1024 / 1e6, "peak_memory_kind": "cpu_peak_rss_of_process"}
