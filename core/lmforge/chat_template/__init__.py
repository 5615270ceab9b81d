"""Chat templates: turn a conversation into the prompt text a model was trained on.

The built-in templates come from plugins (``lmforge-templates``) through the
``register_chat_templates`` hook; ``ChatTemplateConfig`` changes one or defines a new one;
``build_chat_template`` picks the template for a model from its own files.
"""

from .base import ChatTemplate, Message, SystemInUserTemplate, content_text, normalize_messages
from .config import ChatTemplateConfig
from .jinja import JinjaChatTemplate
from .model_files import ModelFiles
from .registry import (
    best_match,
    build_chat_template,
    get_template,
    register_template,
    template_names,
    unregister_template,
)

__all__ = [
    "ChatTemplate",
    "ChatTemplateConfig",
    "JinjaChatTemplate",
    "Message",
    "ModelFiles",
    "SystemInUserTemplate",
    "best_match",
    "build_chat_template",
    "content_text",
    "get_template",
    "normalize_messages",
    "register_template",
    "template_names",
    "unregister_template",
]
