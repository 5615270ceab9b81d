"""Build an engine from a model path and configs: the one place that wires the pieces together."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .. import registry
from ..chat_template import build_chat_template
from ..chat_template.model_files import ModelFiles
from ..demo import DEMO_NAME, demo_model_path
from ..errors import ConfigError
from ..model.hub import is_hub_id, resolve_model_path
from ..model.loader import load_model_info
from ..structured.compiler import GrammarCompiler
from ..tokenizer import Tokenizer
from .async_engine import AsyncEngine
from .cache_sizing import describe_pool, plan_pool
from .llm_engine import LLMEngine
from .loop import EngineLoop
from .memory import describe_memory
from .scheduler import SchedulerConfig
from .settings import EngineSettings, convert_config, with_max_batch_size
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


@dataclass
class _Plan:
    """What the front end knows before any weight loads: the engine, its configuration and
    the model's own configuration, all checked."""

    spec: registry.EngineSpec
    config: object
    settings: EngineSettings
    info: object
    model_path: str | Path
    model_name: str | None
    # The K/V pool in blocks when it is sized in tokens or memory and the engine can estimate
    # its memory before loading (so a size that cannot fit is refused first); else None.
    pool: int | None = None

    @property
    def session_len(self) -> int:
        return self.settings.session_len or self.info.session_len

    @property
    def name(self) -> str:
        """The name the model is served and reported under."""
        return self.model_name or self.settings.model_name or Path(str(self.model_path)).name


def _plan(model_path, backend, backend_config, model_name) -> _Plan:
    spec, cfg = resolve_engine(backend, backend_config)
    check_settings(spec, cfg)
    settings = EngineSettings.from_config(cfg)
    if model_path is None:
        model_path = demo_model_path()
        model_name = model_name or DEMO_NAME
    elif is_hub_id(str(model_path)) and not Path(model_path).exists():
        model_name = model_name or str(model_path)  # served under its Hub id, as vLLM does
    # A Hub id becomes its local snapshot here, so the engine (in whatever process) reads disk.
    model_path = resolve_model_path(model_path, getattr(cfg, "revision", None),
                                    getattr(cfg, "download_dir", None))
    info = load_model_info(
        model_path,
        load_format=settings.load_format,
        rope_scaling_factor=settings.rope_scaling_factor,
        session_len=settings.session_len,
        dtype=settings.dtype,
        seed=settings.seed,
    )
    check_model(spec, info, cfg)
    plan = _Plan(spec, cfg, settings, info, model_path, model_name)
    runner_class = registry.load_object(spec.runner)
    sized = settings.max_kv_tokens or settings.kv_cache_memory is not None
    if sized and hasattr(runner_class, "memory_estimate") and not settings.num_gpu_blocks:
        plan.pool = plan_pool(settings, plan.session_len, runner_class.memory_estimate(info, cfg))
    return plan


def _engine(plan: _Plan, tokenizer: Tokenizer, serving: bool = False) -> LLMEngine:
    """Load the weights, size and allocate the K/V cache, and build the engine. A pool given in
    tokens or memory was checked before the weights load when the engine can estimate its
    memory (see :func:`_plan`); otherwise it is checked now, from the engine's block size."""
    plan.config, plan.settings = with_max_batch_size(plan.config, plan.settings, serving)
    settings = plan.settings
    started = time.perf_counter()
    runner = registry.load_object(plan.spec.runner)(plan.info, plan.config)
    try:
        block_size = settings.block_size
        block_bytes = runner.cache_block_bytes(block_size)
        if settings.num_gpu_blocks:
            num_blocks = settings.num_gpu_blocks
        else:
            pool = plan.pool or plan_pool(settings, plan.session_len, block_bytes // block_size)
            num_blocks = pool or runner.num_cache_blocks(block_size, settings.cache_max_entry_count)
        runner.allocate_cache(num_blocks, block_size)
        scheduler_config = SchedulerConfig(
            max_batch_size=settings.max_batch_size,
            max_step_tokens=settings.max_prefill_token_num,
            block_size=block_size,
            num_blocks=num_blocks,
            max_session_len=plan.session_len,
            prefill_interval=settings.prefill_interval,
        )
        engine = LLMEngine(runner, tokenizer, scheduler_config, plan.session_len,
                           tokenizer.eos_token_ids, plan.info.config.vocab_size)
    except BaseException:
        runner.close()
        raise
    logger.info("%s: %s; session_len %d, max_batch_size %d", plan.spec.name,
                describe_pool(num_blocks, block_size, block_bytes, settings.quant_policy),
                plan.session_len, settings.max_batch_size)
    logger.info("loaded %s in %.1f s; memory: %s", plan.name, time.perf_counter() - started,
                describe_memory())
    return engine


def build_llm_engine(model_path: str | Path | None = None, backend: str | None = None,
                     backend_config=None, model_name: str | None = None,
                     serving: bool = False) -> LLMEngine:
    """Load a model into an :class:`LLMEngine` (no loop, no front end): what the engine
    process runs. ``serving`` picks a server's defaults (see ``default_max_batch_size``)."""
    plan = _plan(model_path, backend, backend_config, model_name)
    return _engine(plan, _load_tokenizer(plan.info), serving)


def build_async_engine(model_path: str | Path | None = None, backend: str | None = None,
                       backend_config=None, chat_template_config=None,
                       model_name: str | None = None,
                       engine_process: bool = False, serving: bool = False) -> AsyncEngine:
    """Load a model and start its engine.

    ``model_path`` is an HF model folder, a GGUF file, a Hugging Face Hub id, or None for the
    bundled demo model. The chosen engine is asked whether it supports the configuration and
    the model before any weight is loaded. With ``engine_process``, the engine runs in a process
    of its own (:mod:`lmforge.engine.process`); otherwise in a thread of this one. ``serving``
    picks a server's defaults where the user set none (a larger batch on a large GPU).
    """
    plan = _plan(model_path, backend, backend_config, model_name)
    tokenizer = _load_tokenizer(plan.info)
    files = ModelFiles.from_gguf(plan.info.gguf) if plan.info.gguf is not None else None
    template = build_chat_template(plan.info.path, chat_template_config,
                                   tokenizer.chat_template, files)
    if engine_process:
        from .process import EngineProcessClient

        loop = EngineProcessClient(dict(model_path=plan.model_path, backend=plan.spec.name,
                                        backend_config=plan.config, model_name=plan.name,
                                        serving=serving))
    else:
        loop = EngineLoop(_engine(plan, tokenizer, serving))
    grammars = GrammarCompiler(tokenizer, plan.info.config.vocab_size, tokenizer.eos_token_ids)
    return AsyncEngine(loop, tokenizer, template, plan.name, plan.session_len, plan.config,
                       match_prefixes=plan.settings.enable_prefix_caching,
                       grammar_compiler=grammars)
