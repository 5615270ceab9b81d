"""Models named by a Hugging Face Hub id (``Qwen/Qwen2.5-0.5B-Instruct``), as LMDeploy and vLLM
take them: downloaded once into the Hub's cache, read from that cache when offline.

Only what lmforge reads is downloaded: the top-level JSON files, the tokenizer files and one
copy of the weights (safetensors, else ``.bin``); a repository of GGUF files gives its only one.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ..errors import ModelLoadError

logger = logging.getLogger(__name__)

# owner/name, as the Hub spells repository ids.
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]{0,95}/[\w.\-]{1,96}$")
TOKENIZER_FILES = ("tokenizer.model", "tiktoken.model", "vocab.txt", "merges.txt")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def is_hub_id(text: str) -> bool:
    """Whether ``text`` has the shape of a Hub repository id (and is not a local path)."""
    return bool(HUB_ID.match(text)) and not text.startswith((".", "~")) and ".." not in text


def resolve_model_path(model_path: str | Path, revision: str | None = None,
                       download_dir: str | Path | None = None) -> Path:
    """The local path of ``model_path``: itself when it exists on disk, else the snapshot of the
    Hub repository it names (downloaded when needed).

    ``revision`` is a branch, tag or commit; ``download_dir`` replaces the Hub's cache folder
    (``HF_HUB_CACHE``). With ``HF_HUB_OFFLINE=1``, or when the Hub cannot be reached, the model
    comes from the cache alone.
    """
    path = Path(model_path).expanduser()
    if path.exists() or not is_hub_id(str(model_path)):
        return path  # the loader says what is wrong with a path that does not exist
    return download_model(str(model_path), revision, download_dir)


def download_model(repo_id: str, revision: str | None = None,
                   download_dir: str | Path | None = None) -> Path:
    """The snapshot folder of ``repo_id`` in the Hub cache, downloaded first when online."""
    from huggingface_hub import constants

    cache_dir = str(download_dir) if download_dir else None
    if constants.HF_HUB_OFFLINE:
        return _cached(repo_id, revision, cache_dir, "HF_HUB_OFFLINE is set")
    files, problem = _remote_files(repo_id, revision)
    if files is None:
        return _cached(repo_id, revision, cache_dir,
                       f"the Hugging Face Hub cannot be reached ({problem})")
    return _download(repo_id, revision, cache_dir, _wanted(repo_id, files))


def _remote_files(repo_id: str, revision: str | None) -> tuple[list[str] | None, str]:
    """The repository's file names, or None and why when the Hub cannot be asked."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import (
        GatedRepoError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi().model_info(repo_id, revision=revision, timeout=10)
    except GatedRepoError:
        raise ModelLoadError(
            f"{repo_id} is a gated model: accept its terms on huggingface.co, then log in with "
            "`hf auth login`."
        ) from None
    except RevisionNotFoundError:
        raise ModelLoadError(
            f"Revision {revision!r} of {repo_id} does not exist; pass a branch, tag or commit "
            "of the repository to --revision."
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            f"{repo_id} is neither a local path nor a model on the Hugging Face Hub; check the "
            "name, or log in with `hf auth login` if the model is private."
        ) from None
    except Exception as exc:  # no network, a proxy, an outage: the cache may still have it
        problem = _short(exc)
        logger.info("the Hub cannot be reached (%s); looking for %s in the cache", problem,
                    repo_id)
        return None, problem
    return [s.rfilename for s in info.siblings or ()], ""


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.rsplit("] ", 1)[-1]  # "[Errno 111] Connection refused" -> "Connection refused"


def _wanted(repo_id: str, files: list[str]) -> list[str]:
    """The files lmforge reads: top-level configs, tokenizer files and one weight format."""
    top = [f for f in files if "/" not in f]
    wanted = [f for f in top if f.endswith((".json", ".jinja")) or f in TOKENIZER_FILES]
    for suffix in WEIGHT_SUFFIXES:
        weights = [f for f in top if f.endswith(suffix)]
        if weights:
            return wanted + weights
    ggufs = [f for f in top if f.endswith(".gguf")]
    if len(ggufs) == 1:
        return wanted + ggufs
    if ggufs:
        raise ModelLoadError(
            f"{repo_id} holds {len(ggufs)} .gguf files; download the one you want with "
            f"`hf download {repo_id} FILE --local-dir DIR` and pass its path."
        )
    raise ModelLoadError(
        f"{repo_id} has no safetensors, .bin or .gguf weights at its top level; lmforge "
        "cannot load it."
    )


def _download(repo_id: str, revision: str | None, cache_dir: str | None,
              files: list[str]) -> Path:
    from huggingface_hub import snapshot_download

    logger.info("fetching %d files of %s from the Hugging Face Hub", len(files), repo_id)
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=files))
    except Exception as exc:  # a full disk, a dropped connection, an outage
        raise ModelLoadError(
            f"Downloading {repo_id} failed ({_short(exc)}); run the command again to resume."
        ) from None


def _cached(repo_id: str, revision: str | None, cache_dir: str | None, why: str) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        cache = cache_dir or constants.HF_HUB_CACHE
        which = f" at revision {revision!r}" if revision else ""
        raise ModelLoadError(
            f"{repo_id}{which} is not in the model cache {cache} and {why}; download it once "
            "while online, or pass a local model folder."
        ) from None
