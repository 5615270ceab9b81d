"""Build an engine from a model path and configs: the one place that wires the pieces together."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import registry
from ..chat_template import build_chat_template
from ..demo import DEMO_NAME, demo_model_path
from ..errors import ConfigError
from ..messages import PytorchEngineConfig, TurbomindEngineConfig
from ..model.loader import load_model_info
from ..tokenizer import Tokenizer
from .async_engine import AsyncEngine
from .features import check_supported
from .llm_engine import LLMEngine
from .loop import EngineLoop
from .scheduler import SchedulerConfig

logger = logging.getLogger(__name__)


def resolve_backend_config(backend: str | None, backend_config) -> tuple[str, object]:
    """Pick the backend name and a config of the right class (LMDeploy: the config decides)."""
    if backend is None:
        backend = "turbomind" if isinstance(backend_config, TurbomindEngineConfig) else "pytorch"
    if backend_config is None:
        backend_config = TurbomindEngineConfig() if backend == "turbomind" else PytorchEngineConfig()
    return backend, backend_config


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def _load_tokenizer(info) -> Tokenizer:
    """The model's tokenizer; a dummy model from a bare config.json borrows the demo model's.

    Benchmarks of big architectures ship only the config; they send token ids, but the engine's
    detokenizer still needs some tokenizer.
    """
    path, gguf_file = info.tokenizer_path, info.tokenizer_gguf_file
    if (info.format == "dummy" and gguf_file is None
            and not any((Path(path) / name).is_file() for name in TOKENIZER_FILES)):
        logger.warning("%s has no tokenizer files; using the demo model's tokenizer", path)
        path = demo_model_path()
    return Tokenizer.from_pretrained(path, gguf_file=gguf_file, eos_token_ids=info.eos_token_ids)


def build_async_engine(model_path: str | Path | None = None, backend: str | None = None,
                       backend_config=None, chat_template_config=None,
                       model_name: str | None = None) -> AsyncEngine:
    """Load a model and start its engine loop.

    ``model_path`` is an HF model folder, a GGUF file, or None for the bundled demo model.
    """
    backend, cfg = resolve_backend_config(backend, backend_config)
    check_supported(cfg)
    spec = registry.get_engine(backend)
    runtime = cfg.to_pytorch() if isinstance(cfg, TurbomindEngineConfig) else cfg
    if model_path is None:
        model_path = demo_model_path()
        model_name = model_name or DEMO_NAME
    info = load_model_info(
        model_path,
        load_format=runtime.load_format,
        rope_scaling_factor=runtime.rope_scaling_factor,
        session_len=runtime.session_len,
        dtype=runtime.dtype,
    )
    runner_cls = registry.load_object(spec.runner)
    runner = runner_cls(info, cfg)
    ok, reason = spec.check(info, str(runner.device))
    if not ok:
        runner.close()
        raise ConfigError(f"The {backend} engine cannot run this model here: {reason}")
    try:
        tokenizer = _load_tokenizer(info)
        template = build_chat_template(info.path, chat_template_config, tokenizer.chat_template)
        block_size = runtime.block_size
        num_blocks = runtime.num_gpu_blocks or runner.num_cache_blocks(
            block_size, runtime.cache_max_entry_count)
        runner.allocate_cache(num_blocks, block_size)
        session_len = runtime.session_len or info.session_len
        scheduler_config = SchedulerConfig(
            max_batch_size=runtime.max_batch_size,
            max_prefill_token_num=runtime.max_prefill_token_num,
            block_size=block_size,
            num_blocks=num_blocks,
            enable_prefix_caching=True,  # hashes always kept: sessions reuse their own history
            max_session_len=session_len,
            prefill_interval=runtime.prefill_interval,
        )
        engine = LLMEngine(runner, tokenizer, scheduler_config, session_len,
                           tokenizer.eos_token_ids, info.config.vocab_size)
    except BaseException:
        runner.close()
        raise
    logger.info("%s: %d KV blocks of %d tokens, session_len %d", backend, num_blocks, block_size,
                session_len)
    name = model_name or runtime.model_name or Path(str(model_path)).name
    return AsyncEngine(EngineLoop(engine), tokenizer, template, name, session_len, cfg,
                       enable_prefix_caching=runtime.enable_prefix_caching)
