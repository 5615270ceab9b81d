"""CUDA graphs for prompt and mixed steps, captured piecewise around attention.

Launched from Python, the ~11 kernels of each layer cost the host about 16 ms per step on an
8B model, while a short prompt's kernels take 5-8 ms on the device: the step waits for the host.
Attention's grid follows the step's sequences and lengths, so the whole step cannot be one
graph, but everything else (embedding, norms, projections, rotary + cache write, MLP) is the
same kernels for any step of T tokens. So each stretch between two layers' attention is
captured once per token bucket, and a step replays them with attention launched eagerly in
between at the step's own sizes: about three launches per layer instead of eleven (vLLM's
piecewise graphs, split by hand at the same place).

The stretches read and write static buffers sized for the largest bucket. Rows past the
step's own tokens are padding: cache slot -1 (the K/V write skips them), and they never reach
attention or the logits. Steps larger than the largest bucket run eagerly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from .inputs import StepInputs
from .models.decoder import Decoder, StepState, layer_head, layer_tail, standard_layer

logger = logging.getLogger(__name__)

# A step of T tokens replays the smallest bucket that holds it and computes the padding too, so
# the buckets step by at most a quarter (a 1,025-token step used to run 1,536 tokens' GEMMs).
BUCKETS = (16, 32, 64, 128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792,
           2048)


def supports_pieces(decoder: Decoder) -> bool:
    """Whether ``decoder`` can run as pieces: the built-in layer on one device, with rotary
    tables that depend on positions alone (dynamic NTK and LongRoPE need each sequence's
    length)."""
    from .parallel.comm import SingleDevice

    return (decoder.forward_layer is standard_layer and isinstance(decoder.comm, SingleDevice)
            and all(r.rope.scaling_type not in ("dynamic", "longrope")
                    for r in decoder.distinct_rotaries))


class PromptGraphs:
    """Replays a prompt or mixed step of up to ``max_tokens`` tokens as captured stretches with
    eager attention between them. ``capture=False`` runs the same stretches eagerly (the CPU
    tests use it to check the decomposition)."""

    def __init__(self, decoder: Decoder, kv_caches, max_tokens: int, device: torch.device,
                 capture: bool = True) -> None:
        self.decoder = decoder
        self.kv_caches = kv_caches
        self.buckets = [b for b in BUCKETS if b <= max_tokens] or [BUCKETS[0]]
        self.capture = capture
        self.device = device
        c, n = decoder.config, self.buckets[-1]
        dtype = decoder.weights.embed.dtype
        i64 = dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(n, **i64)
        self.positions = torch.zeros(n, **i64)
        self.slot_mapping = torch.full((n,), -1, **i64)
        act = dict(dtype=dtype, device=device)
        self.q = torch.zeros(n, c.num_heads, c.head_dim, **act)
        self.k = torch.zeros(n, c.num_kv_heads, c.head_dim, **act)
        self.v = torch.zeros(n, c.num_kv_heads, c.head_dim, **act)
        self.attn = torch.zeros(n, c.q_size, **act)
        self.hidden = torch.zeros(n, c.hidden_size, **act)
        self.residual = torch.zeros(n, c.hidden_size, **act)
        self.pieces: dict[int, list[Callable[[], None]]] = {}
        self.states: dict[int, StepState] = {}  # holds each bucket's rotary tables alive
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self.replays = 0

    def can_run(self, inputs: StepInputs) -> bool:
        return not inputs.is_decode and inputs.input_ids.shape[0] <= self.buckets[-1]

    def capture_all(self) -> None:
        """Capture every bucket's stretches, largest first (the engine's start-up)."""
        start = time.perf_counter()
        for size in reversed(self.buckets):
            self.pieces[size] = self._build(size)
        if self.capture:
            torch.cuda.synchronize(self.device)
        logger.info("prompt steps: %d stretches for each of %d token buckets (up to %d) in %.1f s",
                    len(self.decoder.weights.layers) + 1, len(self.buckets), self.buckets[-1],
                    time.perf_counter() - start)

    def run(self, inputs: StepInputs) -> torch.Tensor:
        """The step's float32 logits, as :meth:`Decoder.forward` gives them."""
        t = inputs.input_ids.shape[0]
        size = next(b for b in self.buckets if b >= t)
        self.input_ids[:t].copy_(inputs.input_ids)
        self.positions[:t].copy_(inputs.positions)
        self.slot_mapping[:t].copy_(inputs.slot_mapping)
        self.slot_mapping[t:size].fill_(-1)
        if size not in self.pieces:
            self.pieces[size] = self._build(size)
        pieces, d = self.pieces[size], self.decoder
        step = StepState(inputs, self.kv_caches, [])
        pieces[0]()
        for index in range(len(d.weights.layers)):
            self.attn[:t].copy_(d.attention.attend_stored(self.q[:t], self.k[:t], self.v[:t],
                                                          index, step))
            pieces[index + 1]()
        self.replays += 1
        return d.logits(self.hidden[:t], self.residual[:t], inputs)

    def _inputs(self, size: int) -> StepInputs:
        """The stretches' view of a step: its tokens only (attention is not in them)."""
        return StepInputs(
            input_ids=self.input_ids[:size],
            positions=self.positions[:size],
            slot_mapping=self.slot_mapping[:size],
            block_tables=torch.zeros(1, 1, dtype=torch.int32, device=self.device),
            kv_lens=torch.ones(1, dtype=torch.int32, device=self.device),
            cu_q_lens=torch.tensor([0, size], dtype=torch.int32, device=self.device),
            logit_rows=torch.zeros(1, dtype=torch.int64, device=self.device),
            is_decode=False,
            kv_lens_host=[size],
            q_lens_host=[size],
        )

    def _build(self, size: int) -> list[Callable[[], None]]:
        """The ``num_layers + 1`` stretches of one bucket: embedding to the first attention,
        each layer's tail to the next one's attention, the last tail."""
        d, layers = self.decoder, self.decoder.weights.layers
        inputs = self._inputs(size)
        step = self.states[size] = StepState(inputs, self.kv_caches, [])

        def keep(q, k_new, v, residual) -> None:
            self.q[:size].copy_(q)
            self.k[:size].copy_(k_new)
            self.v[:size].copy_(v)
            self.residual[:size].copy_(residual)

        def first() -> None:
            step.rope = d.rope_tables(inputs)  # the first stretch's outputs, held by ``step``
            keep(*layer_head(d, 0, layers[0], d.embed(inputs.input_ids), None, step))

        def between(index: int) -> Callable[[], None]:
            def stretch() -> None:
                hidden, residual = layer_tail(d, layers[index - 1], self.attn[:size],
                                              self.residual[:size])
                keep(*layer_head(d, index, layers[index], hidden, residual, step))
            return stretch

        def last() -> None:
            hidden, residual = layer_tail(d, layers[-1], self.attn[:size], self.residual[:size])
            self.hidden[:size].copy_(hidden)
            self.residual[:size].copy_(residual)

        stretches = [first, *(between(i) for i in range(1, len(layers))), last]
        if not self.capture:
            return stretches
        graphs = [self._capture(fn) for fn in stretches]
        logger.debug("captured %d stretches for prompt steps of %d tokens", len(graphs), size)
        return [graph.replay for graph in graphs]

    def _capture(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):  # Triton compiles outside capture
            fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            fn()
        return graph
