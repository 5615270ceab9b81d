"""The ``pytorch`` engine's model runner: weights, the paged K/V pool and one forward per step."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.errors import ConfigError
from lmforge.model.loader import ModelInfo

from .cuda_graph import DecodeGraphs
from .inputs import build_step_inputs
from .models.decoder import LlamaDecoder
from .models.weights import load_decoder_weights
from .ops import get_ops
from .warmup import warm_up

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# A CPU process shares the host with everything else: never give the cache more than this.
CPU_CACHE_CAP_BYTES = 4 << 30


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "Invalid value for device: 'cuda' was asked for but no CUDA GPU is visible."
        )
    return device


def resolve_dtype(name: str, model_dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` is float32 on the CPU and, on a GPU, bfloat16 for bfloat16 checkpoints and float16
    for every other one."""
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if model_dtype.removeprefix("torch.") == "bfloat16" else torch.float16


def available_host_memory() -> int:
    """``MemAvailable`` from ``/proc/meminfo``, in bytes (0 when unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class TorchModelRunner:
    """Runs the Llama-family decoder with paged attention on a CUDA GPU or the CPU.

    Implements :class:`lmforge.engine.runner.ModelRunner`. Device-specific kernels come from
    :func:`lmforge_torch_triton.ops.get_ops`; the runner itself has no device branches beyond
    how much memory the cache may take.
    """

    def __init__(self, model_info: ModelInfo, engine_config: object) -> None:
        self.model_info = model_info
        self.config = model_info.config
        self.engine_config = engine_config
        self.device = resolve_device(getattr(engine_config, "device", "auto"))
        requested = getattr(engine_config, "dtype", "auto")
        if requested == "auto":
            requested = model_info.dtype
        self.dtype = resolve_dtype(requested, self.config.torch_dtype, self.device)
        self.ops = get_ops(self.device)
        # On a GPU the engine queues a step before the previous one's tokens are read.
        self.accepts_prev_tokens = self.device.type == "cuda"
        weights = load_decoder_weights(model_info, self.dtype, self.device)
        self.model = LlamaDecoder(self.config, weights, self.ops, self.device)
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.block_size = 0
        self.graphs: DecodeGraphs | None = None

    def cache_block_bytes(self, block_size: int) -> int:
        """Bytes of K and V for one block across all layers."""
        return block_size * self.config.kv_cache_bytes_per_token(self.dtype.itemsize)

    def num_cache_blocks(self, block_size: int, cache_max_entry_count: float) -> int:
        """How many blocks fit: ``engine_config.num_gpu_blocks`` when set, the count itself when
        ``cache_max_entry_count > 1``, else that fraction of free device memory (of available
        host memory on the CPU, capped at :data:`CPU_CACHE_CAP_BYTES`)."""
        fixed = getattr(self.engine_config, "num_gpu_blocks", 0)
        if fixed:
            return int(fixed)
        if cache_max_entry_count > 1:
            return int(cache_max_entry_count)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            free = min(available_host_memory(), CPU_CACHE_CAP_BYTES / cache_max_entry_count)
        blocks = int(free * cache_max_entry_count) // self.cache_block_bytes(block_size)
        if blocks < 1:
            raise ConfigError(
                "Invalid value for cache_max_entry_count: no K/V cache block fits in the free "
                "memory; raise it, lower block_size, or free memory."
            )
        return blocks

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        c = self.config
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [
            (
                torch.zeros(shape, dtype=self.dtype, device=self.device),
                torch.zeros(shape, dtype=self.dtype, device=self.device),
            )
            for _ in range(c.num_layers)
        ]
        self.block_size = block_size
        if self._use_graphs():
            self.graphs = DecodeGraphs(
                self.model.forward, self.kv_caches,
                max_batch_size=getattr(self.engine_config, "max_batch_size", 128),
                max_blocks=-(-self._session_len() // block_size), device=self.device,
            )
            self.graphs.capture_all()
        if self.device.type == "cuda":
            warm_up(self.execute, block_size, num_blocks, -(-self._session_len() // block_size),
                    getattr(self.engine_config, "max_prefill_token_num", 8192),
                    self.config.vocab_size)
        logger.info(
            "K/V cache: %d blocks of %d tokens (%.2f GiB)",
            num_blocks,
            block_size,
            num_blocks * self.cache_block_bytes(block_size) / 2**30,
        )

    @torch.inference_mode()
    def execute(self, batch: ForwardBatch) -> torch.Tensor:
        """One forward step; float32 logits for the rows the batch asks for."""
        if batch.block_size != self.block_size:
            raise ValueError(
                f"batch block_size {batch.block_size} != cache block size {self.block_size}"
            )
        if self.graphs is not None and self.graphs.can_run(batch):
            return self.graphs.run(batch)
        inputs = build_step_inputs(batch, self.device)
        return self.model.forward(inputs, self.kv_caches)

    def _session_len(self) -> int:
        return getattr(self.engine_config, "session_len", None) or self.model_info.session_len

    def _use_graphs(self) -> bool:
        """Decode steps run as CUDA graphs on a GPU unless ``eager_mode``; dynamic NTK rope
        needs per-sequence host work each step, so it stays eager."""
        return (self.device.type == "cuda"
                and not getattr(self.engine_config, "eager_mode", False)
                and self.config.rope.scaling_type != "dynamic")

    def close(self) -> None:
        self.graphs = None
        self.kv_caches = []
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
