"""Tiny random checkpoints with their transformers reference, and a driver that feeds a
TorchModelRunner hand-built ForwardBatches over a paged block pool."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lmforge.engine.batch import ForwardBatch
from lmforge.messages import PytorchEngineConfig
from lmforge.model.loader import load_model_info
from lmforge_torch_triton.runner import TorchModelRunner
from safetensors.torch import save_file
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    MixtralConfig,
    MixtralForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)

TINY = dict(
    vocab_size=128,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    initializer_range=0.08,
    bos_token_id=1,
    eos_token_id=2,
    tie_word_embeddings=False,
)

_CLASSES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
    "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM),
    "phi3": (Phi3Config, Phi3ForCausalLM),
    "mixtral": (MixtralConfig, MixtralForCausalLM),
    "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM),
}
# Each family's own fields at tiny sizes; the norms of families that scale by 1 + w start at
# zero in transformers, so they get random values like every other weight (see _randomize).
FAMILY = {
    "gemma2": dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
                   attn_logit_softcapping=5.0, final_logit_softcapping=3.0),
    "gemma3": dict(head_dim=16, query_pre_attn_scalar=24, sliding_window=6,
                   sliding_window_pattern=2, rope_local_base_freq=100.0, rope_theta=10000.0,
                   final_logit_softcapping=3.0),
    "phi3": dict(pad_token_id=0),
    "mixtral": dict(num_local_experts=4, num_experts_per_tok=2),
    "qwen3_moe": dict(num_experts=8, num_experts_per_tok=3, moe_intermediate_size=32,
                      norm_topk_prob=False, mlp_only_layers=[1]),
}


def _randomize_norms(model, seed: int) -> None:
    """Norm weights drawn at random (transformers starts them at 0 or 1), so that a norm the
    engine applied wrongly, or not at all, changes the logits."""
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.add_(torch.randn(param.shape, generator=generator) * 0.3)


def _reference(model):
    model = model.float().eval()
    model.generation_config.eos_token_id = None  # generate exactly max_new_tokens
    model.generation_config.pad_token_id = 0
    return model


def save_hf_model(kind: str, out: Path, fmt: str = "safetensors", seed: int = 0, **overrides):
    """A tiny random transformers model saved to ``out`` as ``safetensors``, ``sharded``
    (several safetensors files and an index) or ``bin``; returns the in-memory model."""
    config_cls, model_cls = _CLASSES[kind]
    torch.manual_seed(seed)
    model = model_cls(config_cls(**{**TINY, **FAMILY.get(kind, {}), **overrides}))
    _randomize_norms(model, seed)
    if fmt == "bin":
        model.config.architectures = [model_cls.__name__]
        model.config.save_pretrained(out)
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    else:
        model.save_pretrained(out, max_shard_size="40KB" if fmt == "sharded" else "5GB")
    return _reference(model)


def save_internlm2(out: Path, seed: int = 0):
    """An InternLM2 checkpoint written by hand (transformers has no class for it), with a
    LlamaForCausalLM holding the same weights as its reference."""
    torch.manual_seed(seed)
    llama = LlamaForCausalLM(LlamaConfig(**TINY))
    c = llama.config
    heads, kv_heads = c.num_attention_heads, c.num_key_value_heads
    groups, head_dim = heads // kv_heads, c.hidden_size // heads
    state: dict[str, torch.Tensor] = {}
    for name, tensor in llama.state_dict().items():
        name = (
            name.replace("model.embed_tokens", "model.tok_embeddings")
            .replace("lm_head", "output")
            .replace("self_attn.o_proj", "attention.wo")
            .replace("mlp.gate_proj", "feed_forward.w1")
            .replace("mlp.up_proj", "feed_forward.w3")
            .replace("mlp.down_proj", "feed_forward.w2")
            .replace("input_layernorm", "attention_norm")
            .replace("post_attention_layernorm", "ffn_norm")
        )
        if ".self_attn." in name:
            continue
        state[name] = tensor.contiguous()
    for i, layer in enumerate(llama.model.layers):
        attn = layer.self_attn
        q = attn.q_proj.weight.reshape(kv_heads, groups, head_dim, -1)
        k = attn.k_proj.weight.reshape(kv_heads, 1, head_dim, -1)
        v = attn.v_proj.weight.reshape(kv_heads, 1, head_dim, -1)
        wqkv = torch.cat([q, k, v], dim=1).reshape(-1, c.hidden_size)
        state[f"model.layers.{i}.attention.wqkv.weight"] = wqkv.detach().clone()
    save_file(state, str(out / "model.safetensors"))
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "bias": False,
        "rope_theta": 10000.0,
        "rms_norm_eps": c.rms_norm_eps,
        **{k: TINY[k] for k in TINY if k != "initializer_range"},
    }
    (out / "config.json").write_text(json.dumps(config))
    return _reference(llama)


@dataclass
class PagedSeq:
    tokens: list[int] = field(default_factory=list)
    blocks: list[int] = field(default_factory=list)


class PagedDriver:
    """Owns a runner's block pool (handing out block ids in shuffled order, so pages are never
    contiguous) and turns per-sequence token lists into ForwardBatches."""

    def __init__(self, runner: TorchModelRunner, num_blocks: int = 96, block_size: int = 4):
        runner.allocate_cache(num_blocks, block_size)
        self.runner, self.block_size = runner, block_size
        self.free = list(range(num_blocks))
        random.Random(0).shuffle(self.free)

    def fork_prefix(self, seq: PagedSeq, num_tokens: int) -> PagedSeq:
        """A new sequence whose first ``num_tokens`` (whole blocks) are ``seq``'s cached ones."""
        assert num_tokens % self.block_size == 0
        return PagedSeq(seq.tokens[:num_tokens], seq.blocks[: num_tokens // self.block_size])

    def step(
        self,
        work: list[tuple[PagedSeq, list[int]]],
        need_logits: list[bool] | None = None,
        return_all_logits: bool = False,
    ) -> torch.Tensor:
        ids, q_lens, kv_lens, tables = [], [], [], []
        for seq, new in work:
            seq.tokens += new
            while len(seq.blocks) * self.block_size < len(seq.tokens):
                seq.blocks.append(self.free.pop())
            ids += new
            q_lens.append(len(new))
            kv_lens.append(len(seq.tokens))
            tables.append(list(seq.blocks))
        batch = ForwardBatch(
            input_ids=ids,
            q_lens=q_lens,
            kv_lens=kv_lens,
            block_tables=tables,
            need_logits=need_logits or [True] * len(work),
            block_size=self.block_size,
            return_all_logits=return_all_logits,
        )
        return self.runner.execute(batch)


def make_runner(model_path: Path, device: str = "cpu", **info_kwargs) -> TorchModelRunner:
    info = load_model_info(model_path, **info_kwargs)
    return TorchModelRunner(info, PytorchEngineConfig(device=device, dtype="float32",
                                                      max_batch_size=8))


def hf_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0].float()


def hf_greedy(model, prompt: list[int], steps: int) -> list[int]:
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=steps, do_sample=False)
    return out[0, len(prompt) :].tolist()


def greedy(driver: PagedDriver, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """Batched prefill of every prompt, then ``steps - 1`` batched decode steps."""
    seqs = [PagedSeq() for _ in prompts]
    logits = driver.step(list(zip(seqs, prompts, strict=True)))
    outputs = [[t] for t in logits.argmax(-1).tolist()]
    for _ in range(steps - 1):
        logits = driver.step([(s, [o[-1]]) for s, o in zip(seqs, outputs, strict=True)])
        for o, t in zip(outputs, logits.argmax(-1).tolist(), strict=True):
            o.append(t)
    return outputs


def random_serving_step(rng: random.Random, vocab: int, block: int, blocks: int) -> ForwardBatch:
    """Decodes first, then one to three prompt chunks, as the scheduler orders a mixed step."""
    q_lens, kv_lens = [], []
    for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13, 16, 17, 31, 40])):
        q_lens.append(1)
        kv_lens.append(rng.randint(1, 1500))
    for _ in range(rng.randint(0 if q_lens else 1, 3)):
        chunk = rng.choice([1, 2, 15, 16, 17, 33, 64, rng.randint(1, 400)])
        prefix = rng.choice([0, 0, rng.randint(1, 1000)])
        q_lens.append(chunk)
        kv_lens.append(prefix + chunk)
    return ring_batch(rng, vocab, q_lens, kv_lens, rng.randrange(blocks), block, blocks)


def ring_batch(rng: random.Random, vocab: int, q_lens: list[int], kv_lens: list[int],
               first_block: int, block: int, blocks: int) -> ForwardBatch:
    """A step of random token ids whose sequences take consecutive blocks of a pool of
    ``blocks`` from ``first_block`` on, wrapping around its end, every row asking for logits."""
    tables = []
    for kv_len in kv_lens:
        width = -(-kv_len // block)
        tables.append([(first_block + i) % blocks for i in range(width)])
        first_block += width
    return ForwardBatch(input_ids=[rng.randrange(vocab) for _ in range(sum(q_lens))],
                        q_lens=q_lens, kv_lens=kv_lens, block_tables=tables,
                        need_logits=[True] * len(q_lens), block_size=block)
