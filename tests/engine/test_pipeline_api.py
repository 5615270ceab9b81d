"""The Python API as a new user types it: perplexity of text, and what a Response prints."""

from __future__ import annotations

import pytest
from lmforge import GenerationConfig, PytorchEngineConfig, pipeline
from lmforge.errors import ConfigError


@pytest.fixture(scope="module")
def pipe(tiny_llama_dir):
    config = PytorchEngineConfig(dtype="float32", block_size=16, cache_max_entry_count=64)
    with pipeline(str(tiny_llama_dir), backend_config=config) as p:
        yield p


def test_get_ppl_takes_text_as_well_as_token_ids(pipe):
    text = "The quick brown fox jumps over the lazy dog."
    ids = pipe.tokenizer.encode(text)
    assert pipe.get_ppl(text) == pytest.approx(pipe.get_ppl(ids))
    other = "A second sentence, a little longer than the first one."
    assert pipe.get_ppl([text, other]) == pytest.approx(
        [pipe.get_ppl(ids), pipe.get_ppl(pipe.tokenizer.encode(other))])


def test_get_ppl_of_something_else_is_one_sentence(pipe):
    with pytest.raises(ConfigError, match="get_ppl takes token ids .* or text, or a list of "
                       "either; got dict"):
        pipe.get_ppl([{"role": "user", "content": "hi"}])


def test_response_prints_its_index(pipe):
    responses = pipe(["one", "two"], gen_config=GenerationConfig(max_new_tokens=1))
    assert [r.index for r in responses] == [0, 1]
    assert repr(responses[1]).endswith("index=1)")


def test_lmforge_pipeline_is_callable_after_its_module_is_imported():
    import lmforge
    import lmforge.pipeline as module

    assert callable(lmforge.pipeline) and callable(module)
    from lmforge import pipeline

    assert callable(pipeline)
