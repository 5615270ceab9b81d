"""The ``pytorch`` engine's model runner: weights, the paged K/V pool and one forward per step."""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.cache_sizing import MemoryEstimate, gib
from lmforge.engine.settings import max_batch_size_of
from lmforge.errors import ConfigError
from lmforge.model.loader import ModelInfo

from . import kv_cache
from .block_table import DeviceBlockTables
from .compile_watch import watch_compiles
from .cuda_graph import DecodeGraphs
from .inputs import build_step_inputs
from .models.decoder import Decoder
from .models.pieces import pieces_for
from .models.weights import awq_group_size, load_decoder_weights
from .ops import get_ops
from .parallel.comm import SingleDevice, build_comm
from .parallel.plan import ShardPlan
from .parallel.rendezvous import Rank
from .parallel.workers import WorkerGroup
from .piecewise_graph import PromptGraphs, supports_pieces
from .warmup import warm_up

logger = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# A CPU process shares the host with everything else: never give the cache more than this.
CPU_CACHE_CAP_BYTES = 4 << 30
# On the CPU the default pool holds this many whole sessions rather than a share of the host's
# memory: a chat or a small server needs no more, and a laptop keeps its memory.
CPU_DEFAULT_SESSIONS = 4
# Device memory kept beside weights and cache for allocator slack, CUDA graphs and workspaces;
# one step's activations come on top (see memory_estimate).
RESERVE_BYTES = 1 << 30


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
    """Runs the decoder (:mod:`.models.decoder`) with paged attention on a CUDA GPU or the CPU.

    Implements :class:`lmforge.engine.runner.ModelRunner`. Device-specific kernels come from
    :func:`lmforge_torch_triton.ops.get_ops`; the runner itself has no device branches beyond
    how much memory the cache may take.

    With ``engine_config.tp > 1`` the engine's runner is rank 0 (the driver): it starts ranks
    1..tp-1 (:class:`~lmforge_torch_triton.parallel.workers.WorkerGroup`), each a runner built
    with its ``rank``, and sends them every call that touches the model, so all ranks run the
    same forwards in step. ``config`` is then this rank's shard's shapes.
    """

    def __init__(self, model_info: ModelInfo, engine_config: object,
                 rank: Rank | None = None) -> None:
        self.model_info = model_info
        self.engine_config = engine_config
        device, self.dtype = self._device_and_dtype(model_info, engine_config)
        self.quant_policy = getattr(engine_config, "quant_policy", 0)
        if self.quant_policy == 4 and model_info.config.head_dim % 2:
            raise ConfigError(
                f"Invalid value for quant_policy: 4 packs pairs of dimensions, and this model's "
                f"head_dim {model_info.config.head_dim} is odd; use quant_policy 8 or 0."
            )
        self.ops = get_ops(device)
        # On a GPU the engine queues a step before the previous one's tokens are read.
        self.accepts_prev_tokens = device.type == "cuda"
        self.workers: WorkerGroup | None = None
        if getattr(engine_config, "tp", 1) > 1 and rank is None:
            self.workers = WorkerGroup(model_info, engine_config, device.type)
        try:
            if self.workers is not None:
                rank = self.workers.join(device.type)
            self.device = rank.device(device.type) if rank is not None else device
            plan = ShardPlan(model_info.config, rank.rank if rank else 0, rank.size if rank else 1,
                             awq_group_size(model_info))
            pieces = pieces_for(model_info.architecture)
            weights = load_decoder_weights(model_info, self.dtype, self.device, plan, pieces)
            comm = self._join_shards(plan, rank)
            self.config = plan.local_config()
            self.model = Decoder(self.config, weights, self.ops, self.device, comm, pieces)
        except BaseException:
            if self.workers is not None:
                self.workers.close(kill=True)
            raise
        self.kv_caches: list[kv_cache.LayerKVCache] = []
        self.block_size = 0
        self.graphs: DecodeGraphs | None = None
        self.prompt_graphs: PromptGraphs | None = None
        self.block_tables: DeviceBlockTables | None = None

    @staticmethod
    def _device_and_dtype(model_info: ModelInfo,
                          engine_config: object) -> tuple[torch.device, torch.dtype]:
        device = resolve_device(getattr(engine_config, "device", "auto"))
        requested = getattr(engine_config, "dtype", "auto")
        if requested == "auto":
            requested = model_info.dtype
        return device, resolve_dtype(requested, model_info.config.torch_dtype, device)

    @classmethod
    def memory_estimate(cls, model_info: ModelInfo, engine_config: object) -> MemoryEstimate:
        """One rank's weights, K/V bytes per token and free memory, known before anything
        loads. The reserve covers one step's widest activations (the gated MLP's, or the
        experts' for each token's top-k of them) on top of :data:`RESERVE_BYTES`."""
        device, dtype = cls._device_and_dtype(model_info, engine_config)
        tp = getattr(engine_config, "tp", 1)
        c = ShardPlan(model_info.config, 0, tp, awq_group_size(model_info)).local_config()
        policy = getattr(engine_config, "quant_policy", 0)
        step_tokens = getattr(engine_config, "max_prefill_token_num", 4096)
        mlp = 3 * c.intermediate_size
        if c.moe is not None:
            mlp = max(mlp, c.moe.top_k * (3 * c.moe.intermediate_size + c.hidden_size))
        activations = step_tokens * (mlp + 4 * c.hidden_size) * dtype.itemsize
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            name = f"{device} ({torch.cuda.get_device_name(device)})"
        else:
            free, name = available_host_memory(), "the host (available memory)"
        return MemoryEstimate(
            kv_bytes_per_token=kv_cache.bytes_per_token(c, dtype, policy),
            weight_bytes=model_info.config.num_parameters * dtype.itemsize // tp,
            free_bytes=free,
            reserve_bytes=RESERVE_BYTES + activations,
            device=name,
        )

    def _join_shards(self, plan: ShardPlan, rank: Rank | None):
        """Once every rank holds its shard, set up the collectives between them."""
        if rank is None:
            return SingleDevice()
        if self.workers is None:
            rank.mark("loaded")
            return build_comm(plan, self.device, self.dtype, rank.control)
        self.workers.wait_loaded()
        with self.workers.busy():
            return build_comm(plan, self.device, self.dtype, rank.control)

    def _in_step(self):
        """A context for work that the workers do in step with this rank."""
        return self.workers.busy() if self.workers is not None else nullcontext()

    def cache_block_bytes(self, block_size: int) -> int:
        """Bytes of K and V for one block across all layers, in the ``quant_policy`` layout."""
        return block_size * kv_cache.bytes_per_token(self.config, self.dtype, self.quant_policy)

    def num_cache_blocks(self, block_size: int, cache_max_entry_count: float) -> int:
        """How many blocks fit: ``engine_config.num_gpu_blocks`` when set, the count itself when
        ``cache_max_entry_count > 1``, else that fraction of free device memory. On the CPU,
        :data:`CPU_DEFAULT_SESSIONS` sessions of ``session_len`` (fewer when the batch holds
        fewer), within that fraction of the available host memory and
        :data:`CPU_CACHE_CAP_BYTES`. With tensor parallelism, the
        fewest any rank fits."""
        if self.workers is not None:
            blocks = self.workers.num_cache_blocks(
                block_size, cache_max_entry_count,
                lambda: self.fitting_blocks(block_size, cache_max_entry_count))
        else:
            blocks = self.fitting_blocks(block_size, cache_max_entry_count)
        if blocks < 1:
            raise ConfigError(
                "Invalid value for cache_max_entry_count: no K/V cache block fits in the free "
                "memory; raise it, lower block_size, or free memory."
            )
        return blocks

    def fitting_blocks(self, block_size: int, cache_max_entry_count: float) -> int:
        """:meth:`num_cache_blocks` on this rank alone (0 when none fits)."""
        fixed = getattr(self.engine_config, "num_gpu_blocks", 0)
        if fixed:
            return int(fixed)
        if cache_max_entry_count > 1:
            return int(cache_max_entry_count)
        block_bytes = self.cache_block_bytes(block_size)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            return int(free * cache_max_entry_count) // block_bytes
        free = min(available_host_memory(), CPU_CACHE_CAP_BYTES / cache_max_entry_count)
        # No more whole sessions than the batch can run at once.
        batch = max_batch_size_of(self.engine_config, "cpu")
        sessions = min(CPU_DEFAULT_SESSIONS, batch) * -(-self._session_len() // block_size)
        return min(int(free * cache_max_entry_count) // block_bytes, sessions)

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        """Allocate the pool on every rank; one that does not fit the free memory is refused
        with the numbers rather than left to fail inside the allocator."""
        if self.workers is not None:
            self.workers.allocate_cache(num_blocks, block_size)
        with self._in_step():
            self._allocate_cache(num_blocks, block_size)

    def _allocate_cache(self, num_blocks: int, block_size: int) -> None:
        need = num_blocks * self.cache_block_bytes(block_size)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
        else:
            free = available_host_memory() or need
        tokens = f"{num_blocks * block_size:,} tokens of K/V cache ({gib(need)})"
        if need > free:
            raise ConfigError(
                f"The {tokens} do not fit in the {gib(free)} free on {self.device} once the "
                "weights are loaded; ask for fewer tokens or less memory, or set quant_policy 8 "
                "or 4."
            )
        try:
            self.kv_caches = kv_cache.allocate(self.config, num_blocks, block_size, self.dtype,
                                               self.quant_policy, self.device)
        except torch.cuda.OutOfMemoryError:
            raise ConfigError(
                f"The {tokens} do not fit in the memory free on {self.device}; ask for fewer "
                "tokens or less memory, or set quant_policy 8 or 4."
            ) from None
        self.block_size = block_size
        max_batch_size = max_batch_size_of(self.engine_config, str(self.device))
        max_blocks = -(-self._session_len() // block_size)
        self.block_tables = DeviceBlockTables(max_batch_size, max_blocks, self.device)
        max_step_tokens = getattr(self.engine_config, "max_prefill_token_num", 8192)
        if self._use_graphs():
            self.graphs = DecodeGraphs(self.model.forward, self.kv_caches, max_batch_size,
                                       max_blocks, self.device)
            self.graphs.capture_all()
            if supports_pieces(self.model):
                self.prompt_graphs = PromptGraphs(self.model, self.kv_caches, max_step_tokens,
                                                  self.device)
                self.prompt_graphs.capture_all()
        if self.device.type == "cuda":  # every rank runs the same warm-up steps, in step
            warm_up(self.forward, block_size, num_blocks, max_blocks, max_step_tokens,
                    self.config.vocab_size)
            watch_compiles()

    @torch.inference_mode()
    def execute(self, batch: ForwardBatch) -> torch.Tensor:
        """One forward step; float32 logits for the rows the batch asks for."""
        if batch.block_size != self.block_size:
            raise ValueError(
                f"batch block_size {batch.block_size} != cache block size {self.block_size}"
            )
        if self.workers is None:
            return self.forward(batch)
        with self.workers.busy():
            self.workers.send_step(batch)
            return self.forward(batch)

    @torch.inference_mode()
    def forward(self, batch: ForwardBatch) -> torch.Tensor:
        """The step itself, on this rank (every rank runs it for the same batch)."""
        if self.graphs is not None and self.graphs.can_run(batch):
            return self.graphs.run(batch, self.block_tables)
        inputs = build_step_inputs(batch, self.device, self.block_tables)
        if self.prompt_graphs is not None and self.prompt_graphs.can_run(inputs):
            return self.prompt_graphs.run(inputs)
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
        self.prompt_graphs = None
        self.block_tables = None
        self.kv_caches = []
        self.model = None
        if self.workers is not None:
            self.workers.close()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
