"""Tools the model can call, and parsers that read tool calls out of model text.

No torch, no transformers, no environments here: this is the bottom layer.
"""

from .base import Tool, ToolBox, ToolResult, acknowledge
from .parsers import (
    FORMAT_HINTS,
    FORMATS,
    ParsedCall,
    ParseError,
    format_hint,
    format_tool_call,
    format_tool_calls,
    parse_tool_calls,
)

__all__ = [
    "FORMAT_HINTS",
    "FORMATS",
    "ParseError",
    "ParsedCall",
    "Tool",
    "ToolBox",
    "ToolResult",
    "acknowledge",
    "format_hint",
    "format_tool_call",
    "format_tool_calls",
    "parse_tool_calls",
]
