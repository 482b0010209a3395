"""The policy: one causal LM serving as student (trainable) and teacher (frozen at θ0).

With LoRA the teacher is the base model with the adapters disabled, so one copy of the weights
serves both views; with full fine-tuning the teacher is a frozen copy made at start (it costs one
more copy of the weights in memory). PBSD's optional teacher refresh copies the student's adapter into a second, frozen adapter named ``teacher``.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Iterator

import torch

TEACHER_ADAPTER = "teacher"


class Policy:
    """A model, its tokenizer and chat renderer, with a switch between student and teacher weights.

    Args:
        model: a transformers causal LM, or a ``peft`` model wrapping one.
        tokenizer: its tokenizer (with a chat template), or None for a model used without text.
        renderer: the :class:`~pbsd_agents.chat.ChatRenderer` of ``tokenizer``; built from it when
            not given and the tokenizer has a chat template (pass one to set its end-of-turn token).
        frozen_teacher: for full fine-tuning, keep a frozen copy of the initial weights as the teacher.
            Ignored for a peft model (the base weights are the teacher). When False and not LoRA,
            the teacher is the live model (a "moving teacher").

    Example:
        >>> from transformers import Qwen2Config, Qwen2ForCausalLM
        >>> m = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32,
        ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
        >>> p = Policy(m, tokenizer=None)
        >>> with p.teacher() as t:
        ...     t is not m and not any(q.requires_grad for q in t.parameters())
        True
    """

    def __init__(self, model, tokenizer, *, renderer=None, frozen_teacher: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        if renderer is None and getattr(tokenizer, "chat_template", None):  # scoring alone needs no template
            from .chat import ChatRenderer

            renderer = ChatRenderer(tokenizer)
        self.renderer = renderer
        self.is_peft = hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
        self._teacher_copy = None
        self._has_teacher_adapter = False
        if not self.is_peft and frozen_teacher:
            self._teacher_copy = copy.deepcopy(model).eval()
            for p in self._teacher_copy.parameters():
                p.requires_grad_(False)

    @contextlib.contextmanager
    def teacher(self) -> Iterator[torch.nn.Module]:
        """Yield the module that computes teacher log-probs (no gradient should flow through it)."""
        if self._teacher_copy is not None:
            yield self._teacher_copy
        elif self.is_peft and self._has_teacher_adapter:
            active = self.model.active_adapter
            self.model.set_adapter(TEACHER_ADAPTER)
            try:
                yield self.model
            finally:
                self.model.set_adapter(active)
                # set_adapter marks the activated adapter trainable; keep the teacher frozen.
                self._freeze_teacher_adapter()
        elif self.is_peft:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.model

    @property
    def separate_teacher(self) -> bool:
        """Whether the teacher is a module of its own (the frozen copy), usable alongside the student."""
        return self._teacher_copy is not None

    @contextlib.contextmanager
    def student(self) -> Iterator[torch.nn.Module]:
        yield self.model

    def refresh_teacher(self) -> None:
        """Make the teacher equal to the current student (PBSD's optional teacher refresh)."""
        if self._teacher_copy is not None:
            self._teacher_copy.load_state_dict(self.model.state_dict())
            return
        if not self.is_peft:
            return  # a live teacher is always current
        active = self.model.active_adapter
        if not self._has_teacher_adapter:
            self.model.add_adapter(TEACHER_ADAPTER, copy.deepcopy(self.model.peft_config[active]))
            self._has_teacher_adapter = True
        student_sd = {k: v for k, v in self.model.state_dict().items() if f".{active}." in k}
        teacher_sd = {k.replace(f".{active}.", f".{TEACHER_ADAPTER}."): v.detach().clone() for k, v in student_sd.items()}
        self.model.load_state_dict(teacher_sd, strict=False)
        self.model.set_adapter(active)
        self._freeze_teacher_adapter()

    def _freeze_teacher_adapter(self) -> None:
        for name, p in self.model.named_parameters():
            if f".{TEACHER_ADAPTER}." in name:
                p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device
