"""One run over several processes started by ``torchrun``: what each process does and how they agree.

    torchrun --nproc_per_node=8 -m clprompt.run scenario=imagenet method=coop model=vit_b16 ...

Every process builds the same run (same seed, same stream, same method); they then share the work that
is large and keep the rest identical:

- **feature extraction** (the feature cache's misses): each process encodes a contiguous share of the
  missing samples; the shares are gathered in order, so every process holds every feature; the main
  process (rank 0) writes the shards;
- **evaluation**: each process scores a contiguous share of every test experience; the correct / total
  counts and the task confusion are summed over the processes before the matrix row is filled;
- **training**, data-parallel: each process takes a contiguous share of every minibatch, its loss weighted
  by its share of the batch; the trainable parameters' gradients are summed over the processes before
  the optimizer steps, so every process makes the one-process update (up to the order of float sums)
  and keeps the same parameters. Minibatches smaller than the world are trained whole by every process.
  (Not ``DistributedDataParallel`` itself: its buckets are fixed when it wraps a model, while methods add
  and freeze parameters per experience, and the cached-feature path calls the method outside its
  ``forward``; the summed gradients are what DDP computes.)
- only the main process writes results, checkpoints, adapted states, TensorBoard and prints.

``world_size == 1`` (a plain run) makes every method here a no-op. gloo on CPU, NCCL on CUDA (each process
on ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from typing import Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from clprompt.errors import ClpromptError


class Distributed:
    """This process's place among the run's processes (from torchrun's RANK, WORLD_SIZE, LOCAL_RANK)."""

    def __init__(self, rank: int = 0, world_size: int = 1, local_rank: int = 0, backend: Optional[str] = None):
        self.rank, self.world_size, self.local_rank, self.backend = rank, world_size, local_rank, backend

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: torch.device) -> "Distributed":
        """Join the processes torchrun started (none: a one-process Distributed). The wait for the others is
        ``CLPROMPT_DIST_TIMEOUT_S`` seconds (default 600)."""
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = float(os.environ.get("CLPROMPT_DIST_TIMEOUT_S", "600"))
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        try:
            dist.init_process_group(backend, rank=rank, world_size=world_size,
                                    timeout=datetime.timedelta(seconds=timeout))
            dist.barrier()
        except Exception as error:   # a missing rank: the store or the first collective times out
            raise ClpromptError(
                f"process {rank} of {world_size}: the other processes of the run did not all join within "
                f"{timeout:.0f} s ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
                "Start every rank (torchrun --nproc_per_node=N starts them all), or raise "
                "CLPROMPT_DIST_TIMEOUT_S") from None
        return cls(rank, world_size, local_rank, backend)

    def device(self, requested: torch.device) -> torch.device:
        """The process's device: ``cuda:LOCAL_RANK`` when the run is on CUDA."""
        if self.enabled and requested.type == "cuda":
            return torch.device(f"cuda:{self.local_rank}")
        return requested

    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor on the device the backend communicates on (NCCL: CUDA; gloo: CPU)."""
        return tensor.cuda(self.local_rank) if self.backend == "nccl" else tensor.cpu()

    def share(self, n: int) -> np.ndarray:
        """This process's contiguous share of ``n`` items (positions), in rank order."""
        return np.array_split(np.arange(n), self.world_size)[self.rank]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor summed over the processes (on the tensor's own device)."""
        if not self.enabled:
            return tensor
        reduced = self._comm(tensor.detach().clone())
        dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
        return reduced.to(tensor.device)

    def union(self, mask: np.ndarray) -> np.ndarray:
        """A boolean mask or'ed over the processes."""
        if not self.enabled:
            return mask
        reduced = self._comm(torch.from_numpy(np.asarray(mask, dtype=np.uint8)).clone())
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return reduced.cpu().numpy().astype(bool)

    def gather_shares(self, local: torch.Tensor, total: int) -> torch.Tensor:
        """The processes' shares (rows of ``local``, from ``share(total)``) joined in rank order: [total, ...]."""
        if not self.enabled:
            return local
        sizes = [len(s) for s in np.array_split(np.arange(total), self.world_size)]
        padded = torch.zeros((max(sizes),) + tuple(local.shape[1:]), dtype=local.dtype)
        padded[:len(local)] = local.detach().cpu()
        pieces = [self._comm(torch.empty_like(padded)) for _ in range(self.world_size)]
        dist.all_gather(pieces, self._comm(padded))
        return torch.cat([piece.cpu()[:size] for piece, size in zip(pieces, sizes)]).to(local.device)

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Each parameter's gradient summed over the processes (one flat buffer, one all-reduce)."""
        if not self.enabled:
            return
        with_grad = [p for p in parameters if p.grad is not None]
        if not with_grad:
            return
        flat = self._comm(torch.cat([p.grad.reshape(-1) for p in with_grad]))
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p in with_grad:
            p.grad.copy_(flat[offset:offset + p.numel()].view_as(p.grad))
            offset += p.numel()

    def broadcast_parameters(self, parameters: Sequence[torch.Tensor]) -> None:
        """The main process's values of ``parameters`` on every process (guards against drift)."""
        if not self.enabled:
            return
        with torch.no_grad():
            for p in parameters:
                buffer = self._comm(p.detach().clone())
                dist.broadcast(buffer, src=0)
                p.copy_(buffer.to(p.device))

    def broadcast_object(self, value):
        """The main process's ``value`` (picklable) on every process."""
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
