"""The server's pure pieces: request -> GenerationConfig, Prometheus text, CLI engine options."""

from __future__ import annotations

import pytest
from lmforge.cli.options import build_engine_config
from lmforge.errors import ConfigError
from lmforge.messages import PytorchEngineConfig, TurbomindEngineConfig
from lmforge.serve.metrics import Histogram, ServerMetrics
from lmforge.serve.protocol import ChatCompletionRequest, CompletionRequest
from lmforge.serve.sampling import chat_generation_config, completion_generation_config

MSG = [{"role": "user", "content": "hi"}]


def test_openai_defaults_sample_without_top_k():
    cfg = chat_generation_config(ChatCompletionRequest(model="m", messages=MSG), session_len=100)
    assert (cfg.top_k, cfg.temperature, cfg.top_p, cfg.max_new_tokens) == (0, 1.0, 1.0, 100)
    assert not cfg.greedy and cfg.logprobs is None
    assert (cfg.presence_penalty, cfg.frequency_penalty) == (0.0, 0.0)


def test_chat_fields_map_onto_the_generation_config():
    req = ChatCompletionRequest(
        model="m", messages=MSG, max_tokens=9, max_completion_tokens=5, top_k=3, seed=4,
        stop="x", logprobs=True, top_logprobs=2, presence_penalty=0.5, n=2, ignore_eos=True,
    )  # fmt: skip
    cfg = chat_generation_config(req, session_len=100)
    assert cfg.max_new_tokens == 5  # max_completion_tokens wins, as in OpenAI's API
    assert (cfg.top_k, cfg.random_seed, cfg.stop_words, cfg.logprobs) == (3, 4, ["x"], 2)
    assert (cfg.n, cfg.ignore_eos, cfg.presence_penalty) == (2, True, 0.5)
    no_top = ChatCompletionRequest(model="m", messages=MSG, logprobs=True)
    assert chat_generation_config(no_top, 100).logprobs == 0


def test_completion_defaults_to_16_tokens():
    cfg = completion_generation_config(CompletionRequest(model="m", prompt="a"), session_len=100)
    assert cfg.max_new_tokens == 16 and cfg.stop_words is None


def test_histogram_buckets_are_cumulative_and_inclusive():
    h = Histogram("x_seconds", "help", (0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    lines = h.render()
    assert 'lmforge_x_seconds_bucket{le="0.1"} 2' in lines
    assert 'lmforge_x_seconds_bucket{le="1.0"} 3' in lines
    assert 'lmforge_x_seconds_bucket{le="+Inf"} 4' in lines
    assert "lmforge_x_seconds_count 4" in lines and "lmforge_x_seconds_sum 3.65" in lines


def test_metrics_page_reads_engine_stats():
    text = ServerMetrics().render({"num_running": 2, "kv_blocks_used": 7, "prompt_tokens_total": 5,
                                   "kv_tokens_total": 200064})
    assert "# TYPE lmforge_num_requests_running gauge\nlmforge_num_requests_running 2" in text
    assert "lmforge_kv_cache_blocks_used 7" in text
    assert "# TYPE lmforge_kv_cache_tokens_total gauge\nlmforge_kv_cache_tokens_total 200064" in text
    assert "# TYPE lmforge_prompt_tokens_total counter" in text
    assert text.endswith("\n")


def test_build_engine_config():
    cfg = build_engine_config("pytorch", session_len=128, cache_block_seq_len=32, dtype="float32")
    assert isinstance(cfg, PytorchEngineConfig)
    assert (cfg.session_len, cfg.block_size, cfg.dtype) == (128, 32, "float32")
    tm = build_engine_config("turbomind", model_format="hf", cache_block_seq_len=128)
    assert isinstance(tm, TurbomindEngineConfig) and tm.cache_block_seq_len == 128
    with pytest.raises(ConfigError, match="The pytorch engine has no --model-format setting"):
        build_engine_config("pytorch", model_format="awq")
    with pytest.raises(ConfigError, match="quant_policy"):
        build_engine_config("pytorch", quant_policy=3)


def test_logprobs_that_underflowed_are_finite():
    from lmforge.serve.logprobs import MIN_LOGPROB, chat_logprobs, completion_logprobs

    class Tok:
        def decode(self, ids):
            return "".join(f"<{i}>" for i in ids)

    entries = [{7: float("-inf"), 3: float("nan"), 5: -0.5}]
    chat = chat_logprobs(Tok(), [7], entries, top_n=3).content[0]
    assert chat.logprob == MIN_LOGPROB and [t.logprob for t in chat.top_logprobs][0] == -0.5
    assert all(t.logprob == MIN_LOGPROB for t in chat.top_logprobs[1:])
    text = completion_logprobs(Tok(), [7], entries, top_n=2, text_offset=0)
    assert text.token_logprobs == [MIN_LOGPROB] and text.top_logprobs[0]["<5>"] == -0.5
    assert "Infinity" not in chat.model_dump_json() and "NaN" not in text.model_dump_json()


def test_an_owner_keeps_a_bounded_number_of_sessions():
    from lmforge.serve.interactive import InteractiveSessions

    sessions = InteractiveSessions(max_per_owner=2)
    first, _ = sessions.claim("a", 1)
    sessions.release("a", 1, keep=True)
    sessions.claim("a", 2)  # still generating: never evicted
    sessions.claim("b", 1)  # another owner's sessions do not count
    _, evicted = sessions.claim("a", 3)
    assert evicted == [first] and sessions.get("a", 1) is None
    assert sessions.get("a", 2) is not None and sessions.get("b", 1) is not None


def test_exposure_warning_only_beyond_loopback_without_keys():
    from lmforge.serve.security import exposure_warning

    for host in ("127.0.0.1", "127.0.0.9", "::1", "[::1]", "localhost"):
        assert exposure_warning(host, None) is None, host
    for host in ("0.0.0.0", "::", "192.0.2.7", "example.org"):
        assert "--api-keys" in exposure_warning(host, None), host
        assert exposure_warning(host, ["k"]) is None
