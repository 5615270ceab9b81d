"""Structured output: grammars that constrain what a request may generate.

``grammar`` reads what a request asks for (pure Python); ``compiler`` turns it into token
matchers with llguidance, off the engine loop; ``masks`` fills each step's token bitmask on the
host and applies it to the logits on the device.
"""

from .grammar import Grammar, grammar_from_response_format

__all__ = ["Grammar", "grammar_from_response_format"]
