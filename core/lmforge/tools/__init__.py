"""Tool calling: the tools a request offers (``spec``), how each model family writes calls
(``formats``), and finding the calls in a reply, whole or streamed (``parser``)."""

from .formats import FORMATS, ToolFormat, detect_format, get_format
from .parser import CallDelta, ToolCallParser
from .spec import Function, ToolCall, ToolChoice, parse_tool_choice, parse_tools

__all__ = [
    "FORMATS", "CallDelta", "Function", "ToolCall", "ToolCallParser", "ToolChoice",
    "ToolFormat", "detect_format", "get_format", "parse_tool_choice", "parse_tools",
]
