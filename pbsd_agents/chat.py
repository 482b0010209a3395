"""Chat rendering: turn conversations into token ids with a tokenizer's chat template, turn by turn.

:class:`ChatRenderer` wraps any Hugging Face tokenizer that has a chat template. It gives

- the **prompt ids** of a conversation (rendered with the generation prompt, e.g.
  ``<|im_start|>assistant\\n``), for the student messages or the teacher messages;
- the **observation ids** that the environment's new messages add after an assistant turn: the
  chat-template delta from the end-of-turn token the model generated to the next assistant turn's
  first token (with Qwen2.5: the newline after ``<|im_end|>``, the tool message, the next header);
- the **end-of-turn** token (detected from the template) and the ids generation stops at.

The delta is computed so that ``prompt + actions + observations`` is exactly what the template
renders for the finished conversation, except where the model's sampled ids differ from the
tokenizer's own encoding of the same text (re-tokenization drift; see
:func:`pbsd_agents.invariants.template_drift`). Sampled ids are never decoded and re-encoded for
training; the decoded text is used only to run the tools and to render later turns.

Templates that ignore ``tools=`` (SmolLM2's, for instance) get the tool schemas and the call format
written into the system message instead (the format is the env's: every method takes the
``tool_format`` its env reported at reset); templates that cannot render a ``tool`` message get tool
results as user messages. Both fallbacks are detected once, when the renderer is built.

:meth:`ChatRenderer.render_conversation` is the one place that turns a whole conversation into ids
and an action mask (demonstrations, re-rendering checks); the collector builds the same ids turn
by turn as the model generates them.

Example:
    >>> from pbsd_agents.loading import byte_tokenizer
    >>> r = ChatRenderer(byte_tokenizer())
    >>> r.eot_token, r.decode(r.generation_prompt_ids())
    ('<|im_end|>', '<|im_start|>assistant\\n')
"""

from __future__ import annotations

import json
import re
import warnings
from typing import Any, Sequence

__all__ = ["ChatRenderer", "TemplateError", "tools_system_text"]

PIECE_CACHE = 1 << 14  # encoded pieces kept per renderer (cleared when full)

_PROBE_TEXT = "pbsd probe 7"
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "pbsd_probe_tool",
        "description": "probe",
        "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}},
    },
}


class TemplateError(ValueError):
    """The chat template cannot be rendered turn by turn (see the message for what failed)."""


def tools_system_text(tools: Sequence[dict], tool_format: str = "hermes") -> str:
    """The tool block written into the system message for templates that ignore ``tools=``: the
    schemas, then how to write a call in the env's ``tool_format``.

    Example:
        >>> tool = {"type": "function", "function": {"name": "add", "description": "Add.",
        ...         "parameters": {"type": "object", "properties": {}}}}
        >>> print(tools_system_text([tool]).splitlines()[0])
        You can call tools. Their JSON schemas, one per line:
        >>> "<tool_call>" in tools_system_text([tool])
        True
    """
    from pbsd_agents.tools.parsers import format_hint

    schemas = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return f"You can call tools. Their JSON schemas, one per line:\n{schemas}\n\n{format_hint(tool_format)}"


def _added_token_splitter(tokenizer):
    """``(pattern, ids)`` that cut text at the added tokens a fast tokenizer matches on the raw text, when
    the pieces between them tokenize the same alone as in place; else ``None``.

    A Hugging Face fast tokenizer first splits its input at those tokens, then normalises,
    pre-tokenises and encodes every piece on its own, so ``encode(a + t + b)`` is ``encode(a) + [id(t)]
    + encode(b)``, unless a token also takes the whitespace beside it (``lstrip``/``rstrip``) or only
    matches whole words, or the pre-tokeniser treats the input's first piece differently (Metaspace's
    ``prepend_scheme="first"``, as in Llama 2's tokenizer). The pattern lists the tokens longest first,
    so it matches as the tokenizer does (leftmost, then longest)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "get_added_tokens_decoder"):
        return None  # a slow (Python) tokenizer: no such guarantee
    added = backend.get_added_tokens_decoder()
    raw = {t.content: i for i, t in added.items() if t.content and not t.normalized}
    if not raw or any(t.lstrip or t.rstrip or t.single_word for t in added.values()):
        return None
    pre = backend.pre_tokenizer
    if pre is not None and b'"prepend_scheme":"first"' in pre.__getstate__().replace(b" ", b""):
        return None
    pattern = re.compile("(" + "|".join(re.escape(t) for t in sorted(raw, key=len, reverse=True)) + ")")
    return pattern, raw


class ChatRenderer:
    """Render conversations to token ids with a tokenizer's chat template (see the module docstring).

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        eot_token: the end-of-turn token, when detection from the template is not wanted.

    Attributes:
        eot_id: the token that closes an assistant turn in the template (``<|im_end|>`` for Qwen).
        stop_ids: the ids generation stops at: ``eot_id``, then the tokenizer's eos when different.
        template_has_tools: False when the template ignores ``tools=`` (the system-message fallback is used).
        template_has_tool_role: False when the template cannot render ``tool`` messages (they become user turns).

    Example:
        >>> from pbsd_agents.loading import byte_tokenizer
        >>> r = ChatRenderer(byte_tokenizer())
        >>> msgs = [{"role": "user", "content": "2+2?"}]
        >>> prompt = r.prompt_ids(msgs)
        >>> action = r.encode("<tool_call>...</tool_call>") + [r.eot_id]     # what the model sampled
        >>> turn = {"role": "assistant", "content": r.assistant_text(action)[0]}
        >>> obs = r.observation_ids(msgs + [turn], [{"role": "tool", "content": "4"}])
        >>> r.decode(obs)
        '\\n<|im_start|>tool\\n4<|im_end|>\\n<|im_start|>assistant\\n'
        >>> prompt + action + obs == r.prompt_ids(msgs + [turn, {"role": "tool", "content": "4"}])
        True
    """

    def __init__(self, tokenizer, *, eot_token: str | None = None):
        if tokenizer is None:
            raise ValueError("ChatRenderer needs a tokenizer")
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat template; set tokenizer.chat_template first"
            )
        self.tokenizer = tokenizer
        self._splitter = None  # built by encode, again whenever tokens are added
        self._pieces: dict[str, tuple[int, ...]] = {}  # text between added tokens -> its ids
        self._vocab_size = -1  # len(tokenizer) when the splitter was built
        self.template_has_tools = self._detect_tools_support()
        self.template_has_tool_role = self._detect_tool_role()
        self.eot_id = self._token_id(eot_token) if eot_token is not None else self._detect_eot()
        eos = getattr(tokenizer, "eos_token_id", None)
        # A model may also end its turn with the tokenizer's eos (e.g. <|endoftext|> for Qwen); stop there too.
        self.stop_ids: tuple[int, ...] = (self.eot_id,) + ((eos,) if isinstance(eos, int) and eos != self.eot_id else ())
        self._warned_text_fallback = False

    # ---- detection -----------------------------------------------------------------------------

    def _token_id(self, token: str) -> int:
        ids = self.tokenizer.convert_tokens_to_ids([token])
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if not ids or ids[0] is None or (unk is not None and ids[0] == unk and token != self.tokenizer.unk_token):
            raise ValueError(f"end-of-turn token {token!r} is not in the tokenizer's vocabulary")
        return int(ids[0])

    def _apply(self, messages, tools=None, add_generation_prompt=False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=tools or None, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _detect_tools_support(self) -> bool:
        msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
        try:
            with_tools = self._apply(msgs, [_PROBE_TOOL])
        except Exception:  # a template that chokes on tools= gets the fallback too
            return False
        return with_tools != self._apply(msgs) and "pbsd_probe_tool" in with_tools

    def _detect_tool_role(self) -> bool:
        msgs = [
            {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"},
            {"role": "tool", "name": "pbsd_probe_tool", "content": _PROBE_TEXT},
        ]
        try:
            return _PROBE_TEXT in self._apply(msgs)
        except Exception:
            return False

    def _detect_eot(self) -> int:
        msgs = [{"role": "user", "content": "U"}, {"role": "assistant", "content": _PROBE_TEXT}]
        text = self._apply(msgs)
        at = text.rfind(_PROBE_TEXT)
        suffix = text[at + len(_PROBE_TEXT):] if at >= 0 else ""
        ids = self.encode(suffix)
        if ids:
            return int(ids[0])
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if isinstance(eos, int):
            return eos
        raise TemplateError(
            "could not find the end-of-turn token: the template writes nothing after an assistant message "
            "and the tokenizer has no eos token; pass eot_token= explicitly"
        )

    # ---- rendering -----------------------------------------------------------------------------

    @property
    def eot_token(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.eot_id)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` with no special tokens added (the template writes BOS itself if it wants one).

        With a fast tokenizer whose pieces between added tokens encode independently (see
        ``_added_token_splitter``), each piece is encoded once and remembered: a conversation is rendered
        and encoded again at every turn, and all but its newest messages were seen before (the main
        job's encodings took a quarter of the time, with the same ids)."""
        if len(self.tokenizer) != self._vocab_size:  # built, or tokens were added since
            self._splitter, self._pieces = _added_token_splitter(self.tokenizer), {}
            self._vocab_size = len(self.tokenizer)
        if self._splitter is None or getattr(self.tokenizer, "split_special_tokens", False):
            return self._encode_whole(text)
        pattern, added = self._splitter
        ids: list[int] = []
        for i, part in enumerate(pattern.split(text)):
            if i % 2:  # the separators: added tokens
                ids.append(added[part])
            elif part:
                known = self._pieces.get(part)
                if known is None:
                    if len(self._pieces) >= PIECE_CACHE:
                        self._pieces.clear()
                    known = self._pieces[part] = tuple(self._encode_whole(part))
                ids.extend(known)
        return ids

    def _encode_whole(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, special tokens kept, spaces left as they are."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def prepare(self, messages: Sequence[dict], tools: Sequence[dict] | None = None, *,
                tool_format: str = "hermes") -> tuple[list[dict], list[dict] | None]:
        """The messages and tools actually handed to the template, after the fallbacks (if any)."""
        msgs = [dict(m) for m in messages]
        tools = list(tools) if tools else None
        if tools and not self.template_has_tools:
            block = tools_system_text(tools, tool_format)
            if msgs and msgs[0].get("role") == "system":
                msgs[0]["content"] = f"{msgs[0]['content']}\n\n{block}" if msgs[0].get("content") else block
            else:
                msgs.insert(0, {"role": "system", "content": block})
            tools = None
        if not self.template_has_tool_role:
            merged: list[dict] = []
            for m in msgs:
                if m.get("role") != "tool":
                    merged.append(m)
                    continue
                body = f"<tool_response>\n{m.get('content', '')}\n</tool_response>"
                if merged and merged[-1].get("_tool_block"):  # consecutive results share one user turn
                    merged[-1]["content"] += "\n" + body
                else:
                    merged.append({"role": "user", "content": body, "_tool_block": True})
            msgs = [{k: v for k, v in m.items() if k != "_tool_block"} for m in merged]
        return msgs, tools

    def render_text(self, messages: Sequence[dict], tools: Sequence[dict] | None = None, *,
                    add_generation_prompt: bool = False, tool_format: str = "hermes") -> str:
        """The template's text for ``messages`` (fallbacks applied)."""
        msgs, tools = self.prepare(messages, tools, tool_format=tool_format)
        return self._apply(msgs, tools, add_generation_prompt)

    def render_ids(self, messages: Sequence[dict], tools: Sequence[dict] | None = None, *,
                   add_generation_prompt: bool = False, tool_format: str = "hermes") -> list[int]:
        """``encode(render_text(...))``: the ids of a whole conversation rendered in one go."""
        return self.encode(self.render_text(messages, tools, add_generation_prompt=add_generation_prompt,
                                            tool_format=tool_format))

    def prompt_ids(self, messages: Sequence[dict], tools: Sequence[dict] | None = None, *,
                   tool_format: str = "hermes") -> list[int]:
        """Ids of ``messages`` followed by the generation prompt: what the model continues from."""
        return self.render_ids(messages, tools, add_generation_prompt=True, tool_format=tool_format)

    def observation_ids(self, conversation: Sequence[dict], new_messages: Sequence[dict],
                        tools: Sequence[dict] | None = None, *, tool_format: str = "hermes") -> list[int]:
        """Ids that follow the generated end-of-turn token when ``new_messages`` are added.

        ``conversation`` ends with the assistant turn just generated (its content the decoded text of
        the sampled ids, end-of-turn token excluded). The result runs from right after that turn's
        end-of-turn token up to and including the next generation prompt, so that
        ``ids(conversation) + result == prompt_ids(conversation + new_messages)`` token for token.

        It is the difference of two renderings: the conversation with the new messages and the
        generation prompt, minus the conversation that ends with the assistant turn, checked to be a
        prefix; plus whatever the template writes after the end-of-turn token (Qwen's newline).
        When the token-level prefix check fails but the text-level one holds, the delta text is
        encoded on its own (a warning is issued once: ids at that boundary may then differ from a
        one-shot rendering). When even the text is not a prefix (templates that rewrite earlier
        turns) a :class:`TemplateError` is raised.
        """
        conversation = list(conversation)
        if not conversation or conversation[-1].get("role") != "assistant":
            raise ValueError("observation_ids: the conversation must end with the assistant turn just generated")
        before_text = self.render_text(conversation, tools, tool_format=tool_format)
        after_text = self.render_text(conversation + list(new_messages), tools, add_generation_prompt=True,
                                      tool_format=tool_format)
        before = self.encode(before_text)
        after = self.encode(after_text)
        tail = self._after_eot(before)
        if after[: len(before)] == before:
            return tail + after[len(before):]
        if after_text.startswith(before_text):
            if not self._warned_text_fallback:
                warnings.warn(
                    "chat template: the conversation's ids are not a token-level prefix of the next rendering; "
                    "observation ids are encoded from the text delta, which may drift at the turn boundary "
                    "(measure it with pbsd_agents.invariants.template_drift)",
                    stacklevel=2,
                )
                self._warned_text_fallback = True
            return tail + self.encode(after_text[len(before_text):])
        n = next((i for i, (a, b) in enumerate(zip(before_text, after_text)) if a != b), min(len(before_text), len(after_text)))
        raise TemplateError(
            "chat template rewrites earlier turns when new messages are added, so the conversation cannot be "
            f"rendered turn by turn (first difference at character {n}: {before_text[max(0, n - 40):n + 40]!r} vs "
            f"{after_text[max(0, n - 40):n + 40]!r})"
        )

    def conversation_segments(self, messages: Sequence[dict], tools: Sequence[dict] | None = None, *,
                              tool_format: str = "hermes") -> list[tuple[str, list[int]]]:
        """``[(kind, ids)]`` of a whole conversation, built turn by turn as the collector builds it:
        ``("prompt", ...)`` up to the first assistant turn, then per assistant turn an ``"action"``
        (its canonical ids ``encode(text) + [eot_id]``) and, when the environment answered, an
        ``"observation"`` (the template delta of :meth:`observation_ids`).
        """
        assistant_at = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        if not assistant_at:
            return [("prompt", self.prompt_ids(messages, tools, tool_format=tool_format))]
        segs = [("prompt", self.prompt_ids(messages[:assistant_at[0]], tools, tool_format=tool_format))]
        for j, a in enumerate(assistant_at):
            segs.append(("action", self.encode(messages[a]["content"]) + [self.eot_id]))
            new = list(messages[a + 1: assistant_at[j + 1] if j + 1 < len(assistant_at) else len(messages)])
            if new:
                segs.append(("observation", self.observation_ids(messages[: a + 1], new, tools, tool_format=tool_format)))
        return segs

    def render_conversation(self, messages: Sequence[dict], tools: Sequence[dict] | None = None, *,
                            tool_format: str = "hermes") -> tuple[list[int], list[int]]:
        """``(input_ids, action_mask)`` of a whole conversation: the mask is 1 on assistant turns' ids
        (their end-of-turn token included), 0 on the prompt and the environment's messages.

        Example:
            >>> from pbsd_agents.loading import byte_tokenizer
            >>> r = ChatRenderer(byte_tokenizer())
            >>> ids, mask = r.render_conversation([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
            >>> r.decode([i for i, m in zip(ids, mask) if m])
            'yo<|im_end|>'
        """
        ids: list[int] = []
        mask: list[int] = []
        for kind, seg in self.conversation_segments(messages, tools, tool_format=tool_format):
            ids += seg
            mask += [int(kind == "action")] * len(seg)
        return ids, mask

    def _after_eot(self, ids: list[int]) -> list[int]:
        """The ids the template writes after the last assistant turn's end-of-turn token."""
        for i in range(len(ids) - 1, -1, -1):
            if ids[i] == self.eot_id:
                return ids[i + 1:]
        raise TemplateError(
            f"the template does not close the assistant turn with the end-of-turn token {self.eot_token!r}; "
            "pass eot_token= to ChatRenderer"
        )

    def assistant_text(self, action_ids: Sequence[int]) -> tuple[str, bool]:
        """``(text, finished)`` of a generated turn: the decoded ids without the final stop token.

        ``text`` is what the environment reads and what later renderings show as the assistant turn.
        """
        ids = list(action_ids)
        finished = bool(ids) and ids[-1] in self.stop_ids
        return self.decode(ids[:-1] if finished else ids), finished

    def generation_prompt_ids(self) -> list[int]:
        """The ids the template appends for ``add_generation_prompt=True`` (e.g. ``<|im_start|>assistant\\n``)."""
        msgs = [{"role": "user", "content": "U"}]
        with_prompt = self.render_ids(msgs, add_generation_prompt=True)
        without = self.render_ids(msgs)
        if with_prompt[: len(without)] != without:
            return []
        return with_prompt[len(without):]

    def describe(self) -> dict[str, Any]:
        """What was detected about the template (for logs and drift reports)."""
        return {
            "tokenizer": getattr(self.tokenizer, "name_or_path", ""),
            "eot_token": self.eot_token,
            "stop_ids": list(self.stop_ids),
            "template_has_tools": self.template_has_tools,
            "template_has_tool_role": self.template_has_tool_role,
        }
