"""Build an engine from a model path and configs: the one place that wires the pieces together."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import registry
from ..chat_template import build_chat_template
from ..demo import DEMO_NAME, demo_model_path
from ..errors import ConfigError
from ..model.loader import load_model_info
from ..structured.compiler import GrammarCompiler
from ..tokenizer import Tokenizer
from .async_engine import AsyncEngine
from .llm_engine import LLMEngine
from .loop import EngineLoop
from .scheduler import SchedulerConfig
from .settings import EngineSettings, convert_config
from .support import check_model, check_settings

logger = logging.getLogger(__name__)

DEFAULT_ENGINE = "pytorch"


def resolve_engine(backend: str | None, backend_config) -> tuple[registry.EngineSpec, object]:
    """The engine to build and a configuration of its own class.

    Without ``backend`` the configuration's class picks the engine (LMDeploy: a
    ``TurbomindEngineConfig`` means turbomind), else the default engine. A configuration of
    another engine's class is converted field by field, as LMDeploy does.
    """
    if backend is None and backend_config is not None:
        backend = next((name for name, spec in registry.engines().items()
                        if type(backend_config) is registry.load_object(spec.config_class)),
                       None)
        if backend is None:
            raise ConfigError(
                f"No installed engine takes a {type(backend_config).__name__}; pass backend= "
                "or a configuration class of an installed engine."
            )
    spec = registry.get_engine(backend or DEFAULT_ENGINE)
    config_class = registry.load_object(spec.config_class)
    if backend_config is None:
        return spec, config_class()
    return spec, convert_config(backend_config, config_class)


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

    ``model_path`` is an HF model folder, a GGUF file, or None for the bundled demo model. The
    chosen engine is asked whether it supports the configuration and the model before any
    weight is loaded.
    """
    spec, cfg = resolve_engine(backend, backend_config)
    check_settings(spec, cfg)
    settings = EngineSettings.from_config(cfg)
    if model_path is None:
        model_path = demo_model_path()
        model_name = model_name or DEMO_NAME
    info = load_model_info(
        model_path,
        load_format=settings.load_format,
        rope_scaling_factor=settings.rope_scaling_factor,
        session_len=settings.session_len,
        dtype=settings.dtype,
        seed=settings.seed,
    )
    check_model(spec, info, cfg)
    runner = registry.load_object(spec.runner)(info, cfg)
    try:
        tokenizer = _load_tokenizer(info)
        template = build_chat_template(info.path, chat_template_config, tokenizer.chat_template)
        block_size = settings.block_size
        num_blocks = settings.num_gpu_blocks or runner.num_cache_blocks(
            block_size, settings.cache_max_entry_count)
        runner.allocate_cache(num_blocks, block_size)
        session_len = settings.session_len or info.session_len
        scheduler_config = SchedulerConfig(
            max_batch_size=settings.max_batch_size,
            max_step_tokens=settings.max_prefill_token_num,
            block_size=block_size,
            num_blocks=num_blocks,
            max_session_len=session_len,
            prefill_interval=settings.prefill_interval,
        )
        engine = LLMEngine(runner, tokenizer, scheduler_config, session_len,
                           tokenizer.eos_token_ids, info.config.vocab_size)
    except BaseException:
        runner.close()
        raise
    logger.info("%s: %d KV blocks of %d tokens, session_len %d", spec.name, num_blocks,
                block_size, session_len)
    name = model_name or settings.model_name or Path(str(model_path)).name
    grammars = GrammarCompiler(tokenizer, info.config.vocab_size, tokenizer.eos_token_ids)
    return AsyncEngine(EngineLoop(engine), tokenizer, template, name, session_len, cfg,
                       match_prefixes=settings.enable_prefix_caching, grammar_compiler=grammars)
