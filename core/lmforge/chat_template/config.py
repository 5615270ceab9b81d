"""``ChatTemplateConfig``: pick a chat template by name, change some of its fields, or define one."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import CAPABILITIES, FIELDS, ChatTemplate

logger = logging.getLogger(__name__)

# The fields that give a new template its shape; the others only adjust one.
DEFINING_FIELDS = ("system", "eosys", "user", "eoh", "assistant", "eoa", "separator")


@dataclass
class ChatTemplateConfig:
    """Parameters of a chat template (LMDeploy's fields).

    ``model_name`` names a template (``lmforge list`` prints them). For a known name, the fields
    given here replace that template's fields and the rest stay; a new name defines a template
    from these fields alone, which is then registered under that name. The prompt is::

        {system}{meta_instruction}{eosys}{user}{user content}{eoh}
        {assistant}{assistant content}{eoa}{separator}{user}...

    :param model_name: the template's name.
    :param system: text that opens the system prompt.
    :param meta_instruction: the default system prompt.
    :param eosys: text that closes the system prompt.
    :param user: text that opens a user turn.
    :param eoh: text that closes a user turn.
    :param assistant: text that opens an assistant turn.
    :param eoa: text that closes an assistant turn.
    :param tool: text that opens a tool result's turn.
    :param eotool: text that closes a tool result's turn.
    :param separator: text between an assistant turn and the next user turn.
    :param capability: ``completion``, ``infilling``, ``chat`` or ``python``.
    :param stop_words: strings that end generation.
    """

    model_name: str
    system: str | None = None
    meta_instruction: str | None = None
    eosys: str | None = None
    user: str | None = None
    eoh: str | None = None
    assistant: str | None = None
    eoa: str | None = None
    tool: str | None = None
    eotool: str | None = None
    separator: str | None = None
    capability: str | None = None
    stop_words: list[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model_name, str) or not self.model_name:
            raise ConfigError("ChatTemplateConfig.model_name must be a non-empty string.")
        for name in FIELDS:
            value = getattr(self, name)
            if name == "stop_words":
                ok = value is None or (
                    isinstance(value, (list, tuple)) and all(isinstance(w, str) for w in value)
                )
                if not ok:
                    raise ConfigError("ChatTemplateConfig.stop_words must be a list of strings.")
            elif value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"ChatTemplateConfig.{name} must be a string, not {type(value).__name__}."
                )
        if self.capability is not None and self.capability not in CAPABILITIES:
            raise ConfigError(
                f"ChatTemplateConfig.capability must be one of {', '.join(CAPABILITIES)}, "
                f"not {self.capability!r}."
            )

    def given_fields(self) -> dict[str, Any]:
        """The template fields this config sets (those that are not None)."""
        given = {name: getattr(self, name) for name in FIELDS if getattr(self, name) is not None}
        if "stop_words" in given:
            given["stop_words"] = tuple(given["stop_words"])
        return given

    @property
    def chat_template(self) -> ChatTemplate:
        """The ready template: a known name with these fields changed, or a new registered one.

        A new name must define the template (at least one of :data:`DEFINING_FIELDS`); an
        unknown name alone is refused with the closest known names.
        """
        from .registry import all_templates, get_template, register_template

        known = all_templates().get(self.model_name)
        if known is not None:
            return known.replace(**self.given_fields())
        if not set(self.given_fields()) & set(DEFINING_FIELDS):
            get_template(self.model_name)  # a typo'd name: say which names come close
        logger.info("chat template %r is new; it is defined by its fields", self.model_name)
        template = ChatTemplate(name=self.model_name, **self.given_fields())
        register_template(template)
        return template

    def to_json(self, path: str | Path | None = None) -> str:
        """The config as a JSON string, also written to ``path`` when given."""
        text = json.dumps(dataclasses.asdict(self), ensure_ascii=False, indent=4)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path_or_json: str | Path) -> ChatTemplateConfig:
        """A config from a JSON file's path or from a JSON string."""
        text = str(path_or_json)
        source = "chat template JSON string"
        if not text.lstrip().startswith("{"):
            path = Path(text).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"Chat template config {text!r} is neither a JSON file nor a JSON object; "
                    "pass the path of a JSON file or a JSON string."
                )
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"Cannot read the chat template file {path}: {exc}.") from exc
            source = f"chat template file {path}"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"The {source} is not valid JSON: {exc.msg} at line {exc.lineno} "
                f"column {exc.colno}."
            ) from exc
        if not isinstance(data, dict):
            raise ConfigError(f"The {source} must hold a JSON object, not {type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"The {source} has unknown field(s) {', '.join(unknown)}; the fields are "
                f"{', '.join(f.name for f in dataclasses.fields(cls))}."
            )
        if "model_name" not in data:
            raise ConfigError(f"The {source} needs a 'model_name' field.")
        return cls(**data)
