"""What a model says about itself, read from its own files, for chat-template matching."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError

if TYPE_CHECKING:
    from ..model.gguf_file import GGUFFile


@dataclass(frozen=True)
class ModelFiles:
    """A model described from its own files.

    ``names`` gathers what the model calls itself: ``_name_or_path`` of its config, GGUF
    ``general.name``/``general.basename``, and last the folder or file name (the weakest
    signal, used only when the files say nothing). ``chat_template`` is the tokenizer's Jinja
    template, if it carries one.
    """

    path: str
    architectures: tuple[str, ...] = ()
    model_type: str = ""
    names: tuple[str, ...] = ()
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""

    @classmethod
    def from_path(cls, path: str | Path) -> ModelFiles:
        """Read a model folder (``config.json``, tokenizer files) or a ``.gguf`` file.

        A path that is not on disk (a hub id) is described by its name alone.
        """
        p = Path(path)
        if p.is_file() and p.suffix == ".gguf":
            return _from_gguf(p)
        if p.is_dir():
            ggufs = sorted(p.glob("*.gguf"))
            if ggufs and not (p / "config.json").exists():
                return _from_gguf(ggufs[0])
            return _from_folder(p)
        return cls(path=str(path), names=(str(path),))

    @classmethod
    def from_gguf(cls, gguf: GGUFFile) -> ModelFiles:
        """Describe a GGUF file already read (its metadata names the model and its template)."""
        return _gguf_files(gguf)

    def name_matches(self, pattern: str) -> bool:
        """Whether a regular expression (case-insensitive) occurs in one of the model's names."""
        return any(re.search(pattern, name, re.IGNORECASE) for name in self.names)

    def template_has(self, *markers: str) -> bool:
        """Whether the tokenizer's chat template contains every one of ``markers``."""
        return self.chat_template is not None and all(m in self.chat_template for m in markers)

    def is_type(self, *model_types: str) -> bool:
        """Whether the config's ``model_type`` (or the GGUF architecture) is one of these."""
        return self.model_type.lower() in {t.lower() for t in model_types}

    def has_architecture(self, *architectures: str) -> bool:
        return bool(set(self.architectures) & set(architectures))


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"Cannot read {path}: {exc}; check that the file is valid JSON.") from exc
    return data if isinstance(data, dict) else {}


def _names(declared: list[Any], fallback: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n for n in declared if isinstance(n, str) and n))
    return names or (fallback,)


def _token_text(token: Any) -> str:
    # tokenizer_config.json writes special tokens either as text or as AddedToken dicts.
    if isinstance(token, dict):
        return str(token.get("content", ""))
    return token if isinstance(token, str) else ""


def _tokenizer_chat_template(folder: Path, tokenizer_config: dict[str, Any]) -> str | None:
    jinja_file = folder / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = _read_json(folder / "chat_template.json").get("chat_template")
    template = template or tokenizer_config.get("chat_template")
    if isinstance(template, list):  # several named templates; "default" is the chat one
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    return template if isinstance(template, str) and template else None


def _folder_name(folder: Path) -> str:
    # A Hub download sits in .../models--owner--name/snapshots/<commit>: the id names it.
    repo = folder.parent.parent.name
    if folder.parent.name == "snapshots" and repo.startswith("models--"):
        return repo.removeprefix("models--").replace("--", "/")
    return folder.name


def _from_folder(folder: Path) -> ModelFiles:
    config = _read_json(folder / "config.json")
    tokenizer_config = _read_json(folder / "tokenizer_config.json")
    names = [config.get("_name_or_path"), tokenizer_config.get("name_or_path")]
    return ModelFiles(
        path=str(folder),
        architectures=tuple(config.get("architectures") or ()),
        model_type=str(config.get("model_type") or ""),
        names=_names(names, _folder_name(folder)),
        chat_template=_tokenizer_chat_template(folder, tokenizer_config),
        bos_token=_token_text(tokenizer_config.get("bos_token")),
        eos_token=_token_text(tokenizer_config.get("eos_token")),
    )


def _from_gguf(file: Path) -> ModelFiles:
    from ..model.gguf_file import GGUFFile

    return ModelFiles.from_gguf(GGUFFile(file))


def _gguf_files(gguf: GGUFFile) -> ModelFiles:
    tokens = gguf.get("tokenizer.ggml.tokens") or []

    def token(key: str) -> str:
        index = gguf.get(key)
        return tokens[index] if isinstance(index, int) and 0 <= index < len(tokens) else ""

    return ModelFiles(
        path=str(gguf.path),
        model_type=str(gguf.get("general.architecture") or ""),
        names=_names([gguf.get("general.name"), gguf.get("general.basename")], gguf.path.stem),
        chat_template=gguf.get("tokenizer.chat_template") or None,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
    )
