"""Tools the model can call, and parsers that read tool calls out of model text.

No torch, no transformers, no environments here: this is the bottom layer.
"""

from .base import Tool, ToolBox, ToolResult
from .parsers import FORMATS, ParsedCall, ParseError, format_tool_call, format_tool_calls, parse_tool_calls

__all__ = [
    "FORMATS",
    "ParseError",
    "ParsedCall",
    "Tool",
    "ToolBox",
    "ToolResult",
    "format_tool_call",
    "format_tool_calls",
    "parse_tool_calls",
]
