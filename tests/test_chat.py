"""ChatRenderer: prompt ids, observation deltas, end-of-turn detection, and the template fallbacks."""

import warnings

import pytest

from tests.support import qwen_tokenizer, renderer_for, tokenizer_for

from pbsd_agents.chat import ChatRenderer, TemplateError, tools_system_text
from pbsd_agents.loading import byte_tokenizer

TOOLS = [{"type": "function", "function": {"name": "add", "description": "Add two integers.",
                                           "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}}]
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2}}\n</tool_call>'

# ChatML that ignores tools= and renders any role generically (SmolLM2's template is of this kind)
NO_TOOLS_TEMPLATE = (
    "{%- for m in messages -%}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
# strict alternation: no tool role (Gemma/Llama-2 style)
STRICT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.role not in ['system', 'user', 'assistant'] -%}{{ raise_exception('roles must be system/user/assistant') }}{%- endif -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
# rewrites earlier assistant turns (keeps only the last one's content): not renderable turn by turn
REWRITING_TEMPLATE = (
    "{%- for m in messages -%}{%- set body = m.content if (m.role != 'assistant' or loop.last) else '...' -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + body + '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
# a blank line before each tool turn: with Qwen's BPE the "\n" after <|im_end|> merges with it ("\n\n")
MERGING_TEMPLATE = (
    "{%- for m in messages -%}{%- if m.role == 'tool' -%}{{ '\\n' }}{%- endif -%}"
    "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)


def with_template(template, base="byte"):
    tok = byte_tokenizer(template) if base == "byte" else _qwen_copy()
    if base != "byte":
        tok.chat_template = template
    return tok


def _qwen_copy():
    import copy

    return copy.deepcopy(qwen_tokenizer())


@pytest.mark.parametrize("name", ["byte", "qwen"])
def test_eot_detection_and_generation_prompt(name):
    r = renderer_for(name)
    assert r.eot_token == "<|im_end|>"
    assert r.stop_ids[0] == r.eot_id
    assert r.decode(r.generation_prompt_ids()) == "<|im_start|>assistant\n"
    p = r.prompt_ids(MSGS, TOOLS)
    assert p[-len(r.generation_prompt_ids()):] == r.generation_prompt_ids()
    assert r.template_has_tools and r.template_has_tool_role


def test_qwen_stop_ids_include_its_eos():
    # the shared Qwen files keep the base model's eos (<|endoftext|>): a turn may end with either
    r = renderer_for("qwen")
    tok = qwen_tokenizer()
    assert set(r.stop_ids) == {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}


@pytest.mark.parametrize("name", ["byte", "qwen"])
def test_observation_delta_concatenates_to_the_next_prompt(name):
    r = renderer_for(name)
    conv = MSGS + [{"role": "assistant", "content": CALL}]
    obs = [{"role": "tool", "name": "add", "content": "result = 4"}]
    delta = r.observation_ids(conv, obs, TOOLS)
    # prompt + canonical action (content + eot) + delta == the next prompt, token for token
    prompt = r.prompt_ids(MSGS, TOOLS)
    action = r.encode(CALL) + [r.eot_id]
    assert prompt + action + delta == r.prompt_ids(conv + obs, TOOLS)
    assert r.decode(delta).startswith("\n<|im_start|>")  # the newline after <|im_end|> is not generated
    assert r.decode(delta).endswith("<|im_start|>assistant\n")
    assert "result = 4" in r.decode(delta)


def test_qwen_observation_delta_text():
    r = renderer_for("qwen")
    conv = MSGS + [{"role": "assistant", "content": CALL}]
    obs = [{"role": "tool", "content": "result = 4"}, {"role": "tool", "content": "result = 5"}]
    assert r.decode(r.observation_ids(conv, obs, TOOLS)) == (
        "\n<|im_start|>user\n<tool_response>\nresult = 4\n</tool_response>\n<tool_response>\nresult = 5\n"
        "</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_observation_needs_the_assistant_turn_last():
    with pytest.raises(ValueError, match="must end with the assistant turn"):
        renderer_for("byte").observation_ids(MSGS, [{"role": "tool", "content": "x"}])


def test_assistant_text_strips_the_stop_token():
    r = renderer_for("byte")
    ids = r.encode("hello") + [r.eot_id]
    assert r.assistant_text(ids) == ("hello", True)
    assert r.assistant_text(ids[:-1]) == ("hello", False)


@pytest.mark.parametrize("base", ["byte", "qwen"])
def test_fallback_puts_tools_in_the_system_message(base):
    r = ChatRenderer(with_template(NO_TOOLS_TEMPLATE, base))
    assert not r.template_has_tools
    text = r.render_text(MSGS, TOOLS, add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nBe brief.\n\nYou can call tools.")
    assert '"name": "add"' in text and "<tool_call>" in text
    # no system message: one is added
    text = r.render_text(MSGS[1:], TOOLS)
    assert text.startswith("<|im_start|>system\nYou can call tools.")
    # without tools nothing changes
    assert r.render_text(MSGS) == r.tokenizer.apply_chat_template(MSGS, tokenize=False)


def test_fallback_call_formats():
    assert "[func(arg=value)" in tools_system_text(TOOLS, "python")
    assert '"arguments"' in tools_system_text(TOOLS, "json")
    with pytest.raises(ValueError, match="valid formats"):
        tools_system_text(TOOLS, "xml")


def test_fallback_describes_the_envs_call_format():
    # the env reports its tool_format at reset; a template that ignores tools= is told that format, not Hermes
    import gymnasium

    from pbsd_agents.episode import Episode
    from pbsd_agents.tools.parsers import format_hint

    r = ChatRenderer(with_template(NO_TOOLS_TEMPLATE))
    conv = Episode(gymnasium.make("pbsd/ToolCall-v0", tool_format="python"), options={"index": 0}).conversation
    assert conv.tool_format == "python"
    text = r.decode(r.prompt_ids(conv.student_messages, conv.tools, tool_format=conv.tool_format))
    assert format_hint("python") in text and "<tool_call>" not in text


def test_tool_role_fallback_for_strict_templates():
    r = ChatRenderer(with_template(STRICT_TEMPLATE))
    assert not r.template_has_tool_role
    conv = MSGS + [{"role": "assistant", "content": CALL}]
    obs = [{"role": "tool", "content": "result = 4"}, {"role": "tool", "content": "result = 5"}]
    text = r.decode(r.observation_ids(conv, obs))
    assert text == ("\n<|im_start|>user\n<tool_response>\nresult = 4\n</tool_response>\n<tool_response>\nresult = 5\n"
                    "</tool_response><|im_end|>\n<|im_start|>assistant\n")


def test_rewriting_template_is_a_clear_error():
    r = ChatRenderer(with_template(REWRITING_TEMPLATE))
    conv = MSGS + [{"role": "assistant", "content": CALL}]
    with pytest.raises(TemplateError, match="rewrites earlier turns"):
        r.observation_ids(conv, [{"role": "user", "content": "again"}])


def test_token_boundary_merge_falls_back_to_the_text_delta_with_a_warning():
    r = ChatRenderer(with_template(MERGING_TEMPLATE, "qwen"))
    conv = MSGS + [{"role": "assistant", "content": CALL}]
    obs = [{"role": "tool", "content": "result = 4"}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        delta = r.observation_ids(conv, obs)
    assert any("token-level prefix" in str(w.message) for w in caught)
    assert r.decode(delta) == "\n\n<|im_start|>tool\nresult = 4<|im_end|>\n<|im_start|>assistant\n"


def test_no_chat_template_is_an_error():
    tok = byte_tokenizer(chat_template=None)
    with pytest.raises(TemplateError, match="no chat template"):
        ChatRenderer(tok)
    with pytest.raises(ValueError, match="valid formats"):  # the call format comes from the env, per conversation
        tools_system_text([], tool_format="xml")


# ---- encode: pieces between added tokens encoded once ----------------------------------------------

PIECE_ATOMS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<tool_call>", "</tool_call>", "\n", " ", "  ",
               "\n\n", "\t", "é", "日本", "x", "Hello", " world", "123", '{"a": 1}', "<", "|", ">", "im_end", "'s",
               "\u0301", "A\u030a"]


def _embedded_tokenizer():
    from transformers import AutoTokenizer

    from pbsd_agents.presets import default_model_dir

    if not default_model_dir().exists():
        pytest.skip("the embedded default model is not built in this checkout")
    return AutoTokenizer.from_pretrained(default_model_dir())


@pytest.mark.parametrize("name", ["byte", "qwen", "embedded"])
def test_encode_piece_by_piece_gives_the_tokenizers_ids(name):
    import random

    tok = _embedded_tokenizer() if name == "embedded" else tokenizer_for(name)
    r = ChatRenderer(tok)
    r.encode("")
    assert r._splitter is not None  # the piecewise path is the one under test
    rng = random.Random(0)
    texts = ["".join(rng.choice(PIECE_ATOMS) for _ in range(rng.randint(0, 30))) for _ in range(1500)]
    texts.append(r.render_text(MSGS + [{"role": "assistant", "content": CALL}, {"role": "tool", "content": "4"}], TOOLS))
    for text in texts * 2:  # the second time from remembered pieces
        assert r.encode(text) == list(tok(text, add_special_tokens=False)["input_ids"]), repr(text)
    assert r._pieces


def _unigram_tokenizer(pre_tokenizer, **added):
    from tokenizers import Tokenizer, models
    from transformers import AddedToken, PreTrainedTokenizerFast

    core = Tokenizer(models.Unigram([("<unk>", 0.0), ("▁", -1.0), ("a", -2.0), ("b", -2.0), ("▁a", -1.5), ("▁b", -1.5)],
                                    0, False))
    core.pre_tokenizer = pre_tokenizer
    tok = PreTrainedTokenizerFast(tokenizer_object=core)
    tok.add_special_tokens({"additional_special_tokens": [AddedToken("<s1>", **added)]})
    tok.chat_template = NO_TOOLS_TEMPLATE
    return tok


def test_encode_takes_the_whole_text_where_pieces_would_tokenize_differently():
    from tokenizers import pre_tokenizers

    # Llama 2 style: only the input's first piece gets the word-start mark, so "b" alone is not "b" after <s1>
    first = _unigram_tokenizer(pre_tokenizers.Metaspace(prepend_scheme="first"))
    whole = list(first("a<s1>b", add_special_tokens=False)["input_ids"])
    piecewise = first("a", add_special_tokens=False)["input_ids"] + [first.convert_tokens_to_ids("<s1>")] \
        + first("b", add_special_tokens=False)["input_ids"]
    assert whole != piecewise
    r = ChatRenderer(first)
    assert r.encode("a<s1>b") == whole and r._splitter is None
    # a token that takes the whitespace beside it; split_special_tokens (added tokens read as text)
    stripping = ChatRenderer(_unigram_tokenizer(pre_tokenizers.Metaspace(prepend_scheme="always"), rstrip=True))
    assert stripping.encode("a<s1> b") == list(stripping.tokenizer("a<s1> b", add_special_tokens=False)["input_ids"])
    assert stripping._splitter is None
    q = _qwen_copy()
    r = ChatRenderer(q)
    assert r.encode("hi<|im_end|>") == [*q("hi", add_special_tokens=False)["input_ids"], r.eot_id]
    assert r._splitter is not None
    q.split_special_tokens = True  # added tokens read as text
    assert r.encode("<|im_end|>hi") == list(q("<|im_end|>hi", add_special_tokens=False)["input_ids"])
    assert len(r.encode("<|im_end|>hi")) > 2
    q.split_special_tokens = False
    before = r.encode("x<|pbsd_new|>")  # remembered as text
    q.add_special_tokens({"additional_special_tokens": ["<|pbsd_new|>"]})
    new = q.convert_tokens_to_ids("<|pbsd_new|>")
    assert r.encode("hi<|pbsd_new|>hi") == list(q("hi<|pbsd_new|>hi", add_special_tokens=False)["input_ids"])
    assert new not in before and new in r.encode("x<|pbsd_new|>") and "<|pbsd_new|>" in r._splitter[1]
