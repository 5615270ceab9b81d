"""Predicates over a model's own files that the templates' match rules are built from."""

from __future__ import annotations

from lmforge.chat_template import ModelFiles

# Fine-tuned for chat: a chat/instruct name, or a tokenizer that carries a chat template.
_CHAT_NAME = r"chat|instruct|(^|[-_/ ])it($|[-_ ])"


def is_chat(files: ModelFiles) -> bool:
    """Whether the model is a chat (instruction-tuned) model rather than a base one."""
    return files.chat_template is not None or files.name_matches(_CHAT_NAME)


def family(files: ModelFiles, name: str, *model_types: str) -> bool:
    """Whether the model's type is one of ``model_types`` or a name matches ``name``."""
    return files.is_type(*model_types) or files.name_matches(name)
