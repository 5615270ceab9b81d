"""The ``turbomind`` engine's model runner: weights, buffers and the K/V pool in GPU memory,
and one native call per step into the CUDA library.

Implements :class:`lmforge.engine.runner.ModelRunner`. Everything a step works in is allocated
once (activations for ``max(max_prefill_token_num, max_batch_size)`` tokens, split-K buffers for
``max_batch_size`` sequences, the cuBLASLt workspace), so a decode step is a capturable call and
runs as a CUDA graph.
"""

from __future__ import annotations

import ctypes
import logging

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.engine.graph_sizes import decode_graph_sizes
from lmforge.engine.settings import max_batch_size_of
from lmforge.errors import ConfigError, EngineError
from lmforge.model.loader import ModelInfo
from lmforge.model.rope import rope_inv_freq

from .graphs import DecodeGraphs
from .library import (
    TM_BFLOAT16,
    TM_FLOAT16,
    Library,
    TmLayer,
    TmModelDesc,
    find_cublaslt,
    load_library,
)
from .steps import MAX_SPLITS, DeviceStep, decode_splits, plan_step, tile_span
from .weights import converted_dtype, load_weights

logger = logging.getLogger(__name__)

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
GEMM_WORKSPACE_BYTES = 32 << 20
DECODE_HEADS_PER_BLOCK = 16  # kDecodeRows in decode_attention.cu (the mma's M)


def cuda_device(name: str) -> torch.device:
    if not torch.cuda.is_available():
        raise ConfigError("The turbomind engine needs a CUDA GPU and none is visible; "
                          "use --backend pytorch to run on the CPU.")
    device = torch.device("cuda" if name == "auto" else name)
    if device.type != "cuda":
        raise ConfigError(f"Invalid value for device: the turbomind engine runs on CUDA GPUs, "
                          f"not {name!r}.")
    return torch.device("cuda", device.index if device.index is not None
                        else torch.cuda.current_device())


def open_library(device: torch.device) -> Library:
    """The library, checked to have machine code for ``device``, with cuBLASLt loaded."""
    lib = load_library()
    torch.cuda.init()
    if lib.dll.tm_probe_device(device.index) != 0:
        major, minor = torch.cuda.get_device_capability(device)
        arch = f"{major}{minor}{'a' if major == 9 else ''}"
        built = ", ".join(f"sm_{a}" for a in lib.build_info()["archs"])
        raise ConfigError(
            f"The turbomind library was built for {built}, not this GPU (sm_{major}{minor}); "
            f"rebuild it with `LMFORGE_TURBOMIND_ARCHS={arch} python -m "
            "lmforge_turbomind_cuda.build --force`."
        )
    lib.load_cublaslt(find_cublaslt().encode())
    return lib


def resolve_dtype(requested: str, info: ModelInfo) -> torch.dtype:
    """``auto``: a converted folder's own dtype, else bfloat16 for bfloat16 checkpoints and
    float16 for every other one."""
    if requested == "auto":
        requested = info.dtype if info.dtype != "auto" else (converted_dtype(info) or "auto")
    if requested == "auto":
        requested = info.config.torch_dtype.removeprefix("torch.")
        requested = "bfloat16" if requested == "bfloat16" else "float16"
    return DTYPES[requested]


class TurbomindRunner:
    """Runs a Llama-family decoder through ``libturbomind.so``."""

    def __init__(self, model_info: ModelInfo, engine_config: object) -> None:
        self.model_info = model_info
        self.config = c = model_info.config
        self.engine_config = engine_config
        self.device = cuda_device(getattr(engine_config, "device", "auto"))
        torch.cuda.set_device(self.device)
        self.lib = open_library(self.device)
        self.dtype = resolve_dtype(getattr(engine_config, "dtype", "auto"), model_info)
        self.accepts_prev_tokens = True
        self.weights = load_weights(model_info, self.dtype, self.device)
        self.inv_freq = rope_inv_freq(c.rope, c.head_dim).to(self.device)
        self.max_seqs = max_batch_size_of(engine_config, str(self.device))
        self.max_tokens = max(int(getattr(engine_config, "max_prefill_token_num", 8192)),
                              self.max_seqs)
        self.num_sms = torch.cuda.get_device_properties(self.device).multi_processor_count
        self.buffers = self._allocate_buffers()
        self.kv_caches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.block_size = 0
        self.handle = ctypes.c_void_p()
        self.graphs: DecodeGraphs | None = None

    def _allocate_buffers(self) -> dict[str, torch.Tensor]:
        c, t = self.config, self.max_tokens
        qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim

        def empty(*shape, dtype=self.dtype):
            return torch.empty(shape, dtype=dtype, device=self.device)

        f32 = torch.float32
        return {
            "x": empty(t, c.hidden_size), "residual": empty(t, c.hidden_size),
            "normed": empty(t, c.hidden_size), "qkv_out": empty(t, qkv),
            "attn_out": empty(t, c.q_size), "gate_up_out": empty(t, 2 * c.intermediate_size),
            "act": empty(t, c.intermediate_size),
            "split_out": empty(self.max_seqs, c.num_heads, MAX_SPLITS, c.head_dim, dtype=f32),
            "split_lse": empty(self.max_seqs, c.num_heads, MAX_SPLITS, dtype=f32),
            "gemm_workspace": empty(GEMM_WORKSPACE_BYTES, dtype=torch.uint8),
        }

    def cache_block_bytes(self, block_size: int) -> int:
        return block_size * self.config.kv_cache_bytes_per_token(self.dtype.itemsize)

    def num_cache_blocks(self, block_size: int, cache_max_entry_count: float) -> int:
        """``num_gpu_blocks`` when set, the count itself when ``cache_max_entry_count > 1``,
        else that fraction of the free GPU memory."""
        fixed = getattr(self.engine_config, "num_gpu_blocks", 0)
        if fixed:
            return int(fixed)
        if cache_max_entry_count > 1:
            return int(cache_max_entry_count)
        free, _ = torch.cuda.mem_get_info(self.device)
        blocks = int(free * cache_max_entry_count) // self.cache_block_bytes(block_size)
        if blocks < 1:
            raise ConfigError(
                "Invalid value for cache_max_entry_count: no K/V cache block fits in the free "
                "memory; raise it, lower cache_block_seq_len, or free memory."
            )
        return blocks

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        c = self.config
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [
            (torch.zeros(shape, dtype=self.dtype, device=self.device),
             torch.zeros(shape, dtype=self.dtype, device=self.device))
            for _ in range(c.num_layers)
        ]
        self.block_size = block_size
        self._create_model()
        if not getattr(self.engine_config, "eager_mode", False):
            session_len = (getattr(self.engine_config, "session_len", None)
                           or self.model_info.session_len)
            self.graphs = DecodeGraphs(self, self.max_seqs, -(-session_len // block_size))
            self.graphs.capture_all()
        logger.info("K/V cache: %d blocks of %d tokens (%.2f GiB)", num_blocks, block_size,
                    num_blocks * self.cache_block_bytes(block_size) / 2**30)

    def _create_model(self) -> None:
        c, w, b = self.config, self.weights, self.buffers

        def ptr(t):
            return None if t is None else t.data_ptr()

        layers = (TmLayer * c.num_layers)(*[
            TmLayer(input_norm=ptr(lw["input_norm"]), qkv=ptr(lw["qkv"]),
                    qkv_bias=ptr(lw.get("qkv_bias")), o=ptr(lw["o"]),
                    post_norm=ptr(lw["post_norm"]), gate_up=ptr(lw["gate_up"]),
                    down=ptr(lw["down"]), k_cache=ptr(k), v_cache=ptr(v))
            for lw, (k, v) in zip(w.layers, self.kv_caches, strict=True)
        ])
        desc = TmModelDesc(
            device=self.device.index or 0, dtype=TM_BFLOAT16 if self.dtype == torch.bfloat16 else TM_FLOAT16,
            num_layers=c.num_layers, hidden=c.hidden_size, num_heads=c.num_heads,
            num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, inter=c.intermediate_size,
            vocab=c.vocab_size, norm_eps=c.norm_eps, sliding_window=c.sliding_window or 0,
            block_size=self.block_size, max_tokens=self.max_tokens, max_seqs=self.max_seqs,
            max_splits=MAX_SPLITS, layers=layers, embed=ptr(w.top["embed"]),
            final_norm=ptr(w.top["norm"]), lm_head=ptr(w.lm_head), inv_freq=ptr(self.inv_freq),
            gemm_workspace_bytes=GEMM_WORKSPACE_BYTES,
            **{name: ptr(t) for name, t in b.items()},
        )
        self.lib.model_create(ctypes.byref(desc), ctypes.byref(self.handle))

    def decode_splits(self, num_seqs: int) -> int:
        """Split-K parts for ``num_seqs`` decodes, chosen for the graph bucket that holds them,
        so an eager step and a graph replay compute the same sums."""
        c = self.config
        chunks = -(-(c.num_heads // c.num_kv_heads) // DECODE_HEADS_PER_BLOCK)
        size = next((b for b in decode_graph_sizes(self.max_seqs) if b >= num_seqs), num_seqs)
        return decode_splits(size, c.num_kv_heads * chunks, self.num_sms)

    def forward(self, step_ref) -> None:
        """Queue one step (a ``TmStep`` reference) on the current stream."""
        stream = torch.cuda.current_stream(self.device).cuda_stream
        self.lib.forward(self.handle, step_ref, ctypes.c_void_p(stream))

    @torch.inference_mode()
    def execute(self, batch: ForwardBatch) -> torch.Tensor:
        """One forward step; float32 logits for the rows the batch asks for."""
        if batch.block_size != self.block_size:
            raise ValueError(
                f"batch block_size {batch.block_size} != cache block size {self.block_size}")
        if self.graphs is not None and self.graphs.can_run(batch):
            return self.graphs.run(batch)
        if batch.num_tokens > self.max_tokens:
            raise EngineError(
                f"A step of {batch.num_tokens} tokens exceeds the engine's buffers "
                f"({self.max_tokens}); raise max_prefill_token_num.")
        c = self.config
        plan = plan_step(batch, tile_span(c.num_heads, c.num_kv_heads))
        step = DeviceStep(batch, plan, self.device, self.config.vocab_size, self.dtype,
                          self.decode_splits(plan.num_decode))
        self.forward(step.ref())
        return step.logits

    def close(self) -> None:
        self.graphs = None
        if self.handle:
            self.lib.model_destroy(self.handle)
            self.handle = ctypes.c_void_p()
        self.kv_caches = []
        self.buffers = {}
        self.weights = None
        torch.cuda.empty_cache()
