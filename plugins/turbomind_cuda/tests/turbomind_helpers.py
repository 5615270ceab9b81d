"""A runner over the PyTorch reference of the library's step (no GPU needed), and tiny model
shapes the CUDA kernels take (head_dim 64 or 128)."""

from __future__ import annotations

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.model.loader import load_model_info
from lmforge.model.rope import rope_inv_freq
from lmforge_turbomind_cuda import reference
from lmforge_turbomind_cuda.steps import plan_step, tile_span
from lmforge_turbomind_cuda.weights import load_weights

# head_dim 64: 4 query heads over 2 key/value heads.
KERNEL_TINY = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4,
                   num_key_value_heads=2)


class ReferenceRunner:
    """Implements the ModelRunner calls PagedDriver makes, with reference.forward."""

    def __init__(self, model_path, dtype=torch.float32, device="cpu", **info_kwargs) -> None:
        self.info = load_model_info(model_path, **info_kwargs)
        self.config = self.info.config
        self.dtype, self.device = dtype, torch.device(device)
        self.weights = load_weights(self.info, dtype, self.device)
        self.inv_freq = rope_inv_freq(self.config.rope, self.config.head_dim).to(self.device)
        self.kv_caches = []

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        c = self.config
        shape = (num_blocks, block_size, c.num_kv_heads, c.head_dim)
        self.kv_caches = [(torch.zeros(shape, dtype=self.dtype, device=self.device),
                           torch.zeros(shape, dtype=self.dtype, device=self.device))
                          for _ in range(c.num_layers)]

    def execute(self, batch: ForwardBatch) -> torch.Tensor:
        ids = torch.tensor(batch.input_ids, device=self.device)
        c = self.config
        plan = plan_step(batch, tile_span(c.num_heads, c.num_kv_heads))
        return reference.forward(self.weights, self.config, self.kv_caches, self.inv_freq, ids,
                                 plan)


def save_internlm2_kernel_shape(out):
    """save_internlm2 at a shape the kernels take (it builds from the shared TINY dict)."""
    import torch_runner_helpers

    saved = dict(torch_runner_helpers.TINY)
    torch_runner_helpers.TINY.update(KERNEL_TINY)
    try:
        return torch_runner_helpers.save_internlm2(out)
    finally:
        torch_runner_helpers.TINY.clear()
        torch_runner_helpers.TINY.update(saved)


def make_turbomind_runner(path, dtype: str, **config):
    from lmforge.messages import TurbomindEngineConfig
    from lmforge_turbomind_cuda.runner import TurbomindRunner

    values = dict(dtype=dtype, max_batch_size=8, session_len=256, max_prefill_token_num=512)
    values.update(config)
    return TurbomindRunner(load_model_info(path), TurbomindEngineConfig(**values))


def hf_greedy_cuda(model, prompt: list[int], steps: int) -> list[int]:
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=steps,
                             min_new_tokens=steps, do_sample=False)
    return out[0, len(prompt):].tolist()


def first_divergence_margin(model, prompt: list[int], got: list[int]) -> float | None:
    """Teacher-forced on ``got``: where it first differs from the reference model's argmax, how
    much higher the reference scored its own pick than ``got``'s (a near-tie is a small
    margin); None when every token is the reference's argmax."""
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + got], device="cuda")).logits[0].float()
    for i, token in enumerate(got):
        row = logits[len(prompt) - 1 + i]
        best = int(row.argmax())
        if best != token:
            return float(row[best] - row[token])
    return None


def assert_greedy_near_reference(model, prompts: list[list[int]], got: list[list[int]],
                                 atol: float) -> None:
    """Each reply follows ``model``'s argmax teacher-forced, except at a near-tie (the two
    candidates within ``atol``), and most replies follow it exactly."""
    margins = [first_divergence_margin(model, p, g) for p, g in zip(prompts, got, strict=True)]
    assert all(m is None or m <= atol for m in margins), margins
    assert sum(m is None for m in margins) >= len(prompts) // 2  # most follow it exactly
