"""Host-to-device copies that never make the host wait for the device.

A copy from ordinary (pageable) host memory to a GPU can wait until the device has finished the
work queued before it; the engine queues its next step while the current one runs, so every
per-step input goes through page-locked memory instead, which the copy engine reads on its own.
"""

from __future__ import annotations

import numpy as np
import torch

from .batch import ForwardBatch

_NUMPY_INTS = {torch.int64: np.int64, torch.int32: np.int32}


def to_device(values, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype)`` on ``device``, queued without a host wait on a GPU.

    The page-locked staging tensor is returned to PyTorch's host allocator, which reuses it only
    after the copy has run.
    """
    device = torch.device(device)
    numpy_dtype = _NUMPY_INTS.get(dtype)
    if numpy_dtype is None:
        host = torch.tensor(values, dtype=dtype, pin_memory=device.type == "cuda")
    else:
        # numpy reads a list of Python ints several times faster than torch.tensor does.
        array = np.asarray(values, dtype=numpy_dtype)
        if device.type != "cuda":
            return torch.from_numpy(array)
        host = torch.empty(array.shape, dtype=dtype, pin_memory=True)
        host.numpy()[...] = array
    if device.type != "cuda":
        return host.to(device)
    return host.to(device, non_blocking=True)


def fill_prev_tokens(input_ids: torch.Tensor, batch: ForwardBatch, last_rows: list[int]) -> None:
    """Copy the pending tokens of ``batch`` (see ``ForwardBatch.prev_rows``) from the previous
    step's sampled ids into ``input_ids``, on the device: ``last_rows[i]`` is the row of
    sequence ``i``'s last input token."""
    if not batch.prev_rows:
        return
    pairs = [(last, src) for last, src in zip(last_rows, batch.prev_rows, strict=True) if src >= 0]
    if not pairs:
        return
    index = to_device(pairs, torch.int64, input_ids.device)
    input_ids.index_copy_(0, index[:, 0], batch.prev_tokens.index_select(0, index[:, 1]))
