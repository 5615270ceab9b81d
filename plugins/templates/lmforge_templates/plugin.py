"""Registers the built-in chat templates with lmforge.

The family modules load only when templates are collected, so importing the plugin is cheap.
"""

from __future__ import annotations

import importlib

from lmforge import hookimpl

FAMILIES = ("chatml", "deepseek", "gemma_phi", "glm", "llama", "plain_text")


@hookimpl
def register_chat_templates(register):
    for family in FAMILIES:
        module = importlib.import_module(f"{__package__}.{family}")
        for template in module.templates():
            register(template)
