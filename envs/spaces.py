"""Spaces for chat environments: free text actions and lists of chat messages as observations.

Gymnasium's ``Text`` space rejects spaces and punctuation and ``Sequence`` wants tuples, so neither
describes an assistant turn or a list of OpenAI-style messages. These two do, and they sample, so
``gymnasium.utils.env_checker.check_env`` can exercise an environment without warnings.
"""

from __future__ import annotations

import string
from typing import Any, Sequence

import numpy as np
from gymnasium.spaces import Space

ROLES = ("system", "user", "assistant", "tool")
_ALPHABET = np.array(list(string.printable))


class FreeText(Space[str]):
    """Any Python string up to ``max_length`` characters (an assistant turn).

    Example:
        >>> space = FreeText(max_length=64, seed=0)
        >>> space.contains("Call <tool_call>{...}</tool_call>, then answer \\\\boxed{3}.")
        True
        >>> space.contains(3)
        False
        >>> len(space.sample()) <= 64
        True
    """

    def __init__(self, max_length: int = 100_000, seed: int | np.random.Generator | None = None):
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}")
        self.max_length = max_length
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def sample(self, mask: Any = None, probability: Any = None) -> str:
        length = int(self.np_random.integers(0, min(self.max_length, 64) + 1))
        return "".join(self.np_random.choice(_ALPHABET, size=length))

    def contains(self, x: Any) -> bool:
        return isinstance(x, str) and len(x) <= self.max_length

    def __repr__(self) -> str:
        return f"FreeText(max_length={self.max_length})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FreeText) and other.max_length == self.max_length


class ChatMessages(Space[list]):
    """A list of chat messages: dicts with a ``role`` in ``system/user/assistant/tool`` and a ``content`` string.

    Extra keys (``name``, ``tool_call_id``) are allowed. An empty list is a valid observation
    (what ``step`` returns when the episode is over).

    Example:
        >>> space = ChatMessages(seed=0)
        >>> space.contains([{"role": "user", "content": "What is 2+2?"}])
        True
        >>> space.contains([{"role": "robot", "content": "hi"}])
        False
        >>> space.contains(space.sample())
        True
    """

    def __init__(self, max_messages: int = 1_000, seed: int | np.random.Generator | None = None):
        if not isinstance(max_messages, int) or max_messages < 1:
            raise ValueError(f"max_messages must be a positive int, got {max_messages!r}")
        self.max_messages = max_messages
        self._text = FreeText(max_length=10_000)
        super().__init__(shape=None, dtype=None, seed=seed)

    @property
    def is_np_flattenable(self) -> bool:
        return False

    def seed(self, seed: int | None = None) -> Sequence[int]:
        seeds = super().seed(seed)
        self._text.seed(int(self.np_random.integers(2**31)))
        return seeds

    def sample(self, mask: Any = None, probability: Any = None) -> list:
        n = int(self.np_random.integers(0, 4))
        return [{"role": str(self.np_random.choice(ROLES)), "content": self._text.sample()} for _ in range(n)]

    def contains(self, x: Any) -> bool:
        if not isinstance(x, list) or len(x) > self.max_messages:
            return False
        return all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in x
        )

    def __repr__(self) -> str:
        return f"ChatMessages(max_messages={self.max_messages})"

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, ChatMessages) and other.max_messages == self.max_messages
