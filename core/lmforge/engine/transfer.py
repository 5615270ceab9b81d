"""Host-to-device copies that never make the host wait for the device.

A copy from ordinary (pageable) host memory to a GPU can wait until the device has finished the
work queued before it; the engine queues its next step while the current one runs, so every
per-step input goes through page-locked memory instead, which the copy engine reads on its own.
"""

from __future__ import annotations

import torch


def to_device(values, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    """``torch.tensor(values, dtype=dtype)`` on ``device``, queued without a host wait on a GPU.

    The page-locked staging tensor is returned to PyTorch's host allocator, which reuses it only
    after the copy has run.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return torch.tensor(values, dtype=dtype, device=device)
    host = torch.tensor(values, dtype=dtype, pin_memory=True)
    return host.to(device, non_blocking=True)
