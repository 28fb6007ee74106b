"""Data parallelism under torchrun: every process takes its share of one global batch.

With W processes and a global batch of G, process r takes rows [r*G/W, (r+1)*G/W) of the same batch
(every process draws the same batch from the same seeds). Its loss is its own mean times
n_local * W / n_global (n: tokens or examples), so that DistributedDataParallel's average of the W
gradients is exactly the gradient of the mean over the whole global batch, however unevenly the masked
tokens or the examples fall. One process computes what W would: the tests check that.
"""

import os
import time
import weakref

import torch
import torch.distributed as dist

from training.device import choose_device


def setup_distributed(device_arg):
    """Rank, world size and device; under torchrun (WORLD_SIZE > 1) also the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(device_arg)
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


def check_replicas_agree(model, world: int) -> None:
    """Data parallelism is only right if every process ends with the same adapter: compare them all."""
    mine = torch.cat([p.detach().float().reshape(-1) for p in model.parameters() if p.requires_grad])
    everyone = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(everyone, mine)
    agree = all(torch.equal(everyone[0], other) for other in everyone[1:])
    used = [weakref.ref(t) for t in (mine, *everyone)]
    del mine, everyone  # let go of them here: only gloo's worker thread may still hold them
    wait_until_let_go(used)
    if not agree:
        raise FloatingPointError("the processes ended with different adapters: the replicas diverged")


def leave_together(model, world: int) -> None:
    """The end of a data-parallel run: the replicas compared, then every process leaves at once (gloo can
    abort a process torn down while its peer still talks). Nothing to do for one process."""
    if world > 1:
        check_replicas_agree(model, world)
        dist.barrier()
        dist.destroy_process_group()


def wait_until_let_go(used: list[weakref.ref], patience_s: float = 60.0) -> None:
    """Wait until the tensors a collective used are gone (their weak references dead).

    A gloo collective returns as soon as its result is in, but its worker thread lets go of the tensors
    a moment later, and letting go of a tensor made in Python takes Python's GIL. If that moment comes
    after the interpreter has begun to shut down (the collective was the run's last, the machine is
    loaded), the thread cannot get the GIL and the process aborts ("terminate called without an active
    exception", SIGABRT) with its results already written. So a run's last collective waits here."""
    waited = time.monotonic()
    while any(ref() is not None for ref in used) and time.monotonic() - waited < patience_s:
        time.sleep(1e-3)  # sleeping lets go of the GIL, which the worker thread needs
