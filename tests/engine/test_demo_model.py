"""The bundled demo model (SmolLM2-135M-Instruct, real weights) through the whole engine."""

from __future__ import annotations

import pytest
import torch
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline

pytestmark = pytest.mark.slow


def test_demo_model_greedy_equals_transformers(smollm2_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    messages = [{"role": "user", "content": "What is the capital of France?"}]
    tok = AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    with torch.inference_mode():
        want = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0, len(ids):]
    del model

    cfg = PytorchEngineConfig(dtype="float32", cache_max_entry_count=256, block_size=16)
    with pipeline(None, backend_config=cfg) as pipe:  # None: the demo model
        # The chat template found from the GGUF's own files renders what transformers renders.
        assert pipe.engine.encode_prompt(messages) == ids
        out = pipe(messages, gen_config=GenerationConfig(max_new_tokens=32, top_k=1))
    want = want.tolist()
    if tok.eos_token_id in want:  # transformers stops at EOS and keeps it; lmforge keeps it too
        want = want[: want.index(tok.eos_token_id) + 1]
    assert out.token_ids == want
    assert "Paris" in out.text


def test_demo_model_file_is_parsed_once(smollm2_gguf, monkeypatch):
    # The config, the weights and the chat template share one read of the GGUF; gguf's slow
    # reader is not used at all (the tokenizer reads its vocabulary section itself).
    from lmforge.model.gguf_file import GGUFFile

    reads = []
    read = GGUFFile.__init__

    def counted(self, path):
        reads.append(path)
        read(self, path)

    def refused(*args, **kwargs):
        raise AssertionError("gguf.GGUFReader parsed the file")

    monkeypatch.setattr(GGUFFile, "__init__", counted)
    monkeypatch.setattr("gguf.GGUFReader", refused)
    with pipeline(None, backend_config=PytorchEngineConfig(cache_max_entry_count=16)) as pipe:
        assert pipe("Hi", gen_config=GenerationConfig(max_new_tokens=2)).generate_token_len == 2
    assert reads == [smollm2_gguf]
