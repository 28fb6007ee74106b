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


class Objective(torch.nn.Module):
    """The task's training loss as a module's forward, so that DistributedDataParallel (which hooks forward
    to average the gradients) can wrap it."""

    def __init__(self, model, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, batch):
        return self.task.loss(self.model, batch)


def wrap_objective(objective: Objective, compile: bool, world: int, device):
    """torch.compile (--compile) and DistributedDataParallel (torchrun) around the objective; TF32 on CUDA."""
    if compile:
        objective = torch.compile(objective)
    if world > 1:
        device_ids = [device] if device.type == "cuda" else None
        objective = torch.nn.parallel.DistributedDataParallel(objective, device_ids=device_ids)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    return objective


def share_of_batch(batch: dict, task, batch_size: int, rank: int, world: int, device) -> tuple[dict, torch.Tensor]:
    """This process's rows of the global batch, on its device, and the factor n_local * W / n_global that
    turns its mean loss into its share of the mean over the whole global batch (see the module doc)."""
    mine = slice(rank * batch_size, (rank + 1) * batch_size)  # this process's share
    local = {key: value[mine].to(device) for key, value in batch.items()}
    n_local = task.count(local).float().to(device)  # masked tokens or examples in this share
    n_global = all_reduce_sum(n_local.clone(), world)
    return local, n_local * world / n_global.clamp(min=1)  # mean over the global batch, whatever the split


def global_loss(loss: torch.Tensor, grad_norm: torch.Tensor, step: int, world: int) -> float:
    """The step's loss, the mean over the processes; a FloatingPointError if it or the gradient is not finite."""
    mean = all_reduce_sum(loss.detach().float(), world) / world
    if not (torch.isfinite(mean) and torch.isfinite(grad_norm)):
        raise FloatingPointError(f"step {step}: the loss is {mean.item()} (gradient norm {grad_norm})")
    return mean.item()


def any_process(flag: bool, world: int) -> bool:
    """Whether `flag` is true on any process (a sum over them): a decision only the main process can take."""
    return all_reduce_sum(torch.tensor(float(flag)), world).item() > 0


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
