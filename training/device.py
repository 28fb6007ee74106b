"""The device side of a run: mixed precision and the peak memory it reports.

On CUDA the matmuls run in bf16 under autocast while the trainable weights stay in fp32 (Micikevicius
et al., "Mixed Precision Training", ICLR 2018, Section 3, with bf16 instead of fp16 so no loss scaling
is needed). CPUs are slow at bf16 matmuls, so there autocast is off.
"""

import resource

import torch


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
