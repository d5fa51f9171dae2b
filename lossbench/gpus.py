"""One GPU per job on a machine with several: a job takes a free one, never a busy one.

Hydra's joblib launcher hands each job to whichever worker frees first, so numbering GPUs
by job (job k on GPU k mod n) put two jobs on one GPU while another idled. Instead each
job of a sweep (a group of the batched engine is one job) claims a GPU for as long as it
trains, with an exclusive lock on a file per GPU, released when the job ends or its
process dies. A job that finds every GPU claimed waits for one. The locks live in
``$LOSSBENCH_GPU_LOCKS`` (default: a folder per user in the temp dir), so every lossbench
process of that user on this machine shares them.

Only lossbench's own jobs are seen; a GPU another program uses is not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("lossbench")


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def wants_one_gpu(cfg: Any) -> bool:
    """A job that asks for one device on a GPU or "auto" accelerator; an explicit device list or
    a multi-device strategy is the user's own choice and left alone."""
    t = cfg.trainer
    return t.get("accelerator") in ("gpu", "cuda", "auto") and t.get("devices") == 1


def lock_dir() -> Path:
    default = Path(tempfile.gettempdir()) / f"lossbench-gpus-{os.getuid() if hasattr(os, 'getuid') else 'user'}"
    path = Path(os.environ.get("LOSSBENCH_GPU_LOCKS") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock_name(index: int) -> str:
    """Name a GPU as the machine does, so jobs with other CUDA_VISIBLE_DEVICES agree."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return f"gpu-{visible[index] if index < len(visible) else index}.lock"


@contextlib.contextmanager
def claim_gpu(count: int, first: int = 0, folder: Path | None = None, poll: float = 1.0) -> Iterator[int]:
    """Hold a free GPU among ``count`` for the block (trying ``first`` first); wait while all are held."""
    import fcntl

    folder = folder or lock_dir()
    waited = False
    while True:
        for k in range(count):
            index = (first + k) % count
            f = open(folder / _lock_name(index), "a+")  # noqa: SIM115 - held open as the claim
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            try:
                f.seek(0)
                f.truncate()
                f.write(f"{os.getpid()}\n")
                f.flush()
                yield index
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
                f.close()
            return
        if not waited:
            log.info(f"lossbench: all {count} GPUs are taken by other jobs; waiting for one to free")
            waited = True
        time.sleep(poll)


@contextlib.contextmanager
def gpu_for_job(cfgs: list[Any], job_num: int, count: int | None = None) -> Iterator[int | None]:
    """Around one job of a sweep: when it wants one GPU and there are several, claim a free one
    and set ``trainer.devices=[i]`` on each of its configs (a group job's members share it)."""
    count = gpu_count() if count is None else count
    if count < 2 or not cfgs or not all(wants_one_gpu(c) for c in cfgs):
        yield None
        return
    with claim_gpu(count, first=job_num % count) as index:
        for c in cfgs:
            c.trainer.devices = [index]
        yield index


__all__ = ["claim_gpu", "gpu_count", "gpu_for_job", "lock_dir", "wants_one_gpu"]
