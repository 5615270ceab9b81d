"""Finding chat templates: by name, by matching a model's own files, or from its tokenizer."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from .. import registry
from ..errors import ConfigError
from .base import ChatTemplate
from .jinja import JinjaChatTemplate
from .model_files import ModelFiles

if TYPE_CHECKING:
    from .config import ChatTemplateConfig

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_user_templates: dict[str, ChatTemplate] = {}


def builtin_templates() -> dict[str, ChatTemplate]:
    """Templates that plugins register through ``register_chat_templates``, by name."""
    return registry.chat_templates()


def register_template(template: ChatTemplate) -> None:
    """Add a user-defined template, so that ``get_template`` and ``template_names`` see it.

    A built-in name cannot be taken: change a built-in through ``ChatTemplateConfig`` instead.
    """
    if template.name in builtin_templates():
        raise ConfigError(
            f"Chat template name {template.name!r} is a built-in template; choose another "
            "name for a new template."
        )
    with _lock:
        _user_templates[template.name] = template


def unregister_template(name: str) -> None:
    """Forget a user-defined template (a name that is not one does nothing)."""
    with _lock:
        _user_templates.pop(name, None)


def all_templates() -> dict[str, ChatTemplate]:
    """Built-in and user-defined templates, by name."""
    with _lock:
        return {**_user_templates, **builtin_templates()}


def template_names() -> list[str]:
    """Every template name that ``get_template`` accepts, sorted."""
    return sorted(all_templates())


def get_template(name: str) -> ChatTemplate:
    """The template called ``name``; an unknown name raises :class:`ConfigError`."""
    templates = all_templates()
    if name in templates:
        return templates[name]
    if not builtin_templates():
        hint = (
            "no built-in templates are loaded: install them with `pip install lmforge-templates`, "
            "or define the template with a ChatTemplateConfig JSON"
        )
    else:
        close = difflib.get_close_matches(name.lower(), list(templates), n=3, cutoff=0.6)
        names = ", ".join(close[:-1]) + " or " + close[-1] if len(close) > 1 else "".join(close)
        hint = f"did you mean {names}? " if close else ""
        hint += "`lmforge list` shows every name"
    raise ConfigError(f"Chat template {name!r} is unknown; {hint}.")


def best_match(model_files: ModelFiles) -> ChatTemplate | None:
    """The built-in template that fits the model, or None.

    When several match, the highest ``priority`` wins (the more specific family), then the name,
    so the choice does not depend on the order plugins registered in.
    """
    matches = [t for t in all_templates().values() if t.match(model_files)]
    if not matches:
        return None
    return min(matches, key=lambda t: (-t.priority, t.name))


def build_chat_template(
    model_path: str | Path,
    chat_template_config: ChatTemplateConfig | None = None,
    tokenizer_chat_template: str | None = None,
    model_files: ModelFiles | None = None,
) -> ChatTemplate:
    """The chat template to use for a model.

    In order: the explicit ``chat_template_config``; else the best built-in that matches the
    model's own files; else the tokenizer's Jinja template (``tokenizer_chat_template``, or the
    one in the model's files); else a plain template that passes prompts through as they are.
    ``model_files`` is the model's description when the caller has read it already.
    """
    if chat_template_config is not None:
        return chat_template_config.chat_template
    files = model_files or ModelFiles.from_path(model_path)
    if tokenizer_chat_template and files.chat_template is None:
        files = dataclasses.replace(files, chat_template=tokenizer_chat_template)
    template = best_match(files)
    if template is not None:
        logger.info("chat template %r matches %s", template.name, model_path)
        return template
    if files.chat_template:
        logger.info("using the tokenizer's own chat template for %s", model_path)
        return JinjaChatTemplate(
            source=files.chat_template, bos_token=files.bos_token, eos_token=files.eos_token
        )
    logger.warning(
        "no chat template matches %s and its tokenizer has none; prompts are passed as they are "
        "(choose one with --chat-template, see `lmforge list`)", model_path,
    )
    return ChatTemplate(name="base", capability="completion")
