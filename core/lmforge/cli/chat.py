"""``lmforge chat``: talk to a model in the terminal."""

from __future__ import annotations

from typing import Annotated

import typer

from . import options
from .command import LmforgeCommand

SAMPLING_PANEL = "Sampling"


def chat(
    model_path: options.ModelPath = None,
    backend: options.Backend = "pytorch",
    chat_template: options.ChatTemplate = None,
    meta_instruction: Annotated[
        str | None,
        typer.Option("--meta-instruction", metavar="TEXT",
                     help="System prompt. Deprecated: use --chat-template."),
    ] = None,
    model_name: options.ModelName = None,
    revision: options.Revision = None,
    download_dir: options.DownloadDir = None,
    trust_remote_code: options.TrustRemoteCode = False,
    tp: options.Tp = 1,
    session_len: options.SessionLen = None,
    max_batch_size: options.ChatMaxBatchSize = 1,
    cache_max_entry_count: options.CacheMaxEntryCount = 0.8,
    kv_cache_memory: options.KvCacheMemory = None,
    max_kv_tokens: options.MaxKvTokens = None,
    cache_block_seq_len: options.CacheBlockSeqLen = 64,
    enable_prefix_caching: options.EnablePrefixCaching = False,
    max_prefill_token_num: options.MaxPrefillTokenNum = 8192,
    quant_policy: options.QuantPolicy = options.QuantPolicyName.none,
    model_format: options.ModelFormat = None,
    rope_scaling_factor: options.RopeScalingFactor = 0.0,
    dtype: options.Dtype = options.DtypeName.auto,
    device: options.Device = options.DeviceName.auto,
    load_format: options.LoadFormat = options.LoadFormatName.auto,
    adapters: Annotated[
        list[str] | None,
        typer.Option("--adapters", metavar="PATH", help="LoRA adapters (not available yet).",
                     rich_help_panel=options.ENGINE_PANEL),
    ] = None,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", metavar="N", help="Most tokens per reply.",
                          rich_help_panel=SAMPLING_PANEL)
    ] = 512,
    temperature: Annotated[
        float, typer.Option("--temperature", metavar="X",
                            help="Sampling temperature; 0 is greedy.",
                            rich_help_panel=SAMPLING_PANEL)
    ] = 0.7,
    top_p: Annotated[
        float, typer.Option("--top-p", metavar="X", help="Nucleus sampling mass.",
                            rich_help_panel=SAMPLING_PANEL)
    ] = 0.9,
    top_k: Annotated[
        int, typer.Option("--top-k", metavar="N", help="Sample from the k likeliest tokens; "
                          "0 is no limit, 1 is greedy.", rich_help_panel=SAMPLING_PANEL)
    ] = 40,
    repetition_penalty: Annotated[
        float, typer.Option("--repetition-penalty", metavar="X",
                            help="Above 1 discourages repeats.", rich_help_panel=SAMPLING_PANEL)
    ] = 1.0,
    seed: Annotated[
        int | None, typer.Option("--seed", metavar="N",
                                 help="Random seed, for reproducible replies.",
                                 rich_help_panel=SAMPLING_PANEL)
    ] = None,
) -> None:
    """Chat with a model in the terminal (the bundled demo model without MODEL_PATH).

    Type 'reset' to start a new conversation and 'exit' (or Ctrl-D) to quit; Ctrl-C stops a
    reply. Lines pasted together are one message; so are the lines between two lines of three
    double quotes (\"\"\"). With standard input piped in, each line is one message and only the
    replies are printed.
    """
    from ..messages import GenerationConfig
    from ..pipeline import pipeline
    from .chat_repl import run_chat
    from .loading import loading, model_source

    backend_config = options.engine_config_from(backend, locals())
    if adapters:
        backend_config.adapters = {str(i): a for i, a in enumerate(adapters)}
    gen_config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
        repetition_penalty=repetition_penalty, random_seed=seed,
    )
    template_config = options.load_chat_template_config(chat_template)
    source = model_source(model_path, model_name, backend_config, trust_remote_code)
    with loading(source):
        pipe = pipeline(source.path, backend_config=backend_config,
                        chat_template_config=template_config, backend=backend,
                        model_name=source.name)
    with pipe:
        if meta_instruction is not None:
            pipe.engine.chat_template = pipe.engine.chat_template.replace(
                meta_instruction=meta_instruction)
        run_chat(pipe, gen_config)


def register(app: typer.Typer) -> None:
    app.command("chat", cls=LmforgeCommand)(chat)
