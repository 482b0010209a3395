"""The kit's cached decoder: the same tokens and log-probabilities as transformers, with key/values reused."""

from __future__ import annotations

import pytest
import torch

from tests.support import byte_tok, renderer_for, tiny_model

from pbsd_agents.decoding import CachedDecoder, supports
from pbsd_agents.engines import HFEngine, SamplingParams
from pbsd_agents.models import Policy

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [40, 41], [70, 71, 72, 73], [40, 41], [90, 91, 92]]
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=12)


def _model(kind: str):
    """A tiny random decoder of each supported layout (GQA, biases or not, per-head norms)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=len(byte_tok()), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2)
    if kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif kind == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=8, **common))
    else:
        raise ValueError(kind)
    with torch.no_grad():  # biases start at 0 and norm weights at 1: arithmetic that mishandles them would pass
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _lora_model(targets: list[str]):
    """A Qwen2 with a non-zero LoRA adapter on ``targets``, so that student and teacher differ."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model("qwen2"), LoraConfig(r=4, target_modules=targets))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def _engines(model, **kwargs):
    policy = Policy(model, byte_tok(), frozen_teacher=False)
    stops = renderer_for("byte").stop_ids
    return HFEngine(policy, stop_ids=stops, **kwargs), HFEngine(policy, stop_ids=stops, decode="generate")


@pytest.mark.parametrize("kind", ["qwen2", "llama", "qwen3"])
def test_same_greedy_tokens_and_logprobs_as_generate(kind):
    model = _model(kind)
    assert supports(model)
    cached, reference = _engines(model)
    a, b = cached.generate(PROMPTS, GREEDY), reference.generate(PROMPTS, GREEDY)
    assert [g.ids for g in a] == [g.ids for g in b]
    for x, y in zip(a, b):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


def test_fused_weights_follow_a_change_of_dtype():
    model = _model("qwen2")
    decoder = CachedDecoder(model)
    pick = lambda logits: (logits.argmax(-1, keepdim=True), torch.zeros(len(logits)))  # noqa: E731
    args = dict(max_new_tokens=6, stop_ids=[0], pad_id=0)
    decoder.decode(PROMPTS, pick, **args)
    model.to(torch.float64)  # no version bump: the stamp must still see it
    ids, _ = decoder.decode(PROMPTS, pick, **args)
    assert torch.equal(ids, CachedDecoder(model).decode(PROMPTS, pick, **args)[0])


def test_decoding_runs_in_inference_mode_and_returns_ordinary_tensors():
    model = _model("qwen2")
    modes = []
    pick = lambda logits: modes.append(torch.is_inference_mode_enabled()) or (  # noqa: E731
        logits.argmax(-1, keepdim=True), torch.zeros(len(logits)))
    ids, lps = CachedDecoder(model).decode(PROMPTS, pick, max_new_tokens=4, stop_ids=[0], pad_id=0)
    assert modes and all(modes)
    assert not ids.is_inference() and not lps.is_inference()
    ids[0, 0], lps[0, 0] = 1, 0.5  # a caller may edit them in place
    # the model trains afterwards: nothing of its own became an inference tensor
    model.train()
    model(torch.tensor([PROMPTS[0]])).logits.sum().backward()


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_unfused_projections_decode_alike(kind):
    # unfused, a step's products over several rows run as (W x^T)^T, the MLP by hand
    model = _model(kind)
    fused, unfused = CachedDecoder(model), CachedDecoder(model, fuse=False)
    assert fused.layers[0].fuse_qkv and not unfused.layers[0].fuse_qkv and unfused.layers[0].plain_mlp
    seen = {"fused": [], "unfused": []}

    def picker(name):
        def pick(logits):
            seen[name].append(logits.clone())
            return logits.argmax(-1, keepdim=True), torch.zeros(len(logits))
        return pick

    args = dict(max_new_tokens=10, stop_ids=[0], pad_id=0)
    ids = [d.decode(PROMPTS, picker(name), **args)[0] for d, name in ((fused, "fused"), (unfused, "unfused"))]
    assert torch.equal(*ids)
    for a, b in zip(seen["fused"], seen["unfused"]):
        assert torch.allclose(a, b, atol=1e-5)


def test_lora_student_and_teacher_match_generate():
    model = _lora_model(["q_proj", "v_proj", "gate_proj"])
    cached, reference = _engines(model)
    for teacher in (False, True):
        a = cached.generate(PROMPTS, GREEDY, teacher=teacher)
        b = reference.generate(PROMPTS, GREEDY, teacher=teacher)
        assert [g.ids for g in a] == [g.ids for g in b]
    assert [g.ids for g in cached.generate(PROMPTS, GREEDY)] != [g.ids for g in cached.generate(PROMPTS, GREEDY, teacher=True)]


def _second_round(first, extra=(60, 61, 62)):
    """Each prompt extended by its turn and an observation, as the collector builds the next round."""
    return [p + g.ids + list(extra) for p, g in zip(PROMPTS, first)]


def test_a_prompt_that_extends_the_last_call_reuses_its_key_values():
    model = tiny_model("byte", hidden=32, layers=2, mean_turn=6.0)
    engine, _ = _engines(model)
    first = engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    second = _second_round(first)
    decoder = engine._decoder(model, False)
    before = decoder.reused_tokens
    got = engine.generate(second, GREEDY)
    prompts = {tuple(p) for p in PROMPTS}
    assert max(len(g.ids) for g in first) > 1
    assert decoder.reused_tokens - before > sum(map(len, prompts))  # every prompt and some of its turn
    fresh, _ = _engines(model)
    want = fresh.generate(second, GREEDY)
    assert [g.ids for g in got] == [g.ids for g in want]
    for x, y in zip(got, want):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)


def test_prefill_in_row_chunks_decodes_like_one_prefill(monkeypatch):
    """Long prompts are prefilled a few rows at a time (memory); a chunk of one row must change nothing,
    in a first round and in one that reuses kept key/values."""
    import pbsd_agents.decoding as decoding

    model = _model("qwen2")
    with torch.no_grad():  # peaked attention, so that a key at the wrong position or row would show
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=12, seed=0)
    whole, _ = _engines(model)
    want = [whole.generate(PROMPTS, sampled)]
    want.append(whole.generate(_second_round(want[0]), GREEDY))
    monkeypatch.setattr(decoding, "PREFILL_FLOATS", 1)
    chunked, _ = _engines(model)
    decoder = chunked._decoder(model, False)
    segments = [(r, 0, 9, 0) for r in range(len(PROMPTS))]
    assert decoder._prefill_chunks(segments) == [[s] for s in segments]
    got = [chunked.generate(PROMPTS, sampled)]
    got.append(chunked.generate(_second_round(got[0]), GREEDY))
    assert decoder.reused_tokens > 0
    for a, b in zip(got, want):
        assert [g.ids for g in a] == [g.ids for g in b]
        for x, y in zip(a, b):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3"])
def test_prefill_segments_batched_or_one_at_a_time_decode_alike(kind, monkeypatch):
    """Several rows' short prefill segments run as one padded batch (each masked to its own columns) or,
    past ``_Segments.MAX_SCORES`` or ``MAX_WIDTH``, a row at a time through SDPA: the same tokens, in a first round and in one
    that reuses kept key/values (GQA; Qwen3's per-head norms leave the attention scale unfolded)."""
    import pbsd_agents.decoding as decoding

    width = decoding._Segments.MAX_WIDTH  # a first turn's long prompts go a row at a time
    assert decoding._Segments.fits([(0, 0, width, 0), (1, 0, 2, 0)], 4)
    assert not decoding._Segments.fits([(0, 0, width + 1, 0), (1, 0, 2, 0)], 4)
    model = _model(kind)
    with torch.no_grad():  # peaked attention, so that a key at the wrong position or row would show
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    sampled = SamplingParams(temperature=1.0, max_new_tokens=12, seed=0)
    batched = []
    call = decoding._Segments.__call__
    monkeypatch.setattr(decoding._Segments, "__call__", lambda self, *a: batched.append(1) or call(self, *a))
    results = []
    for limit in (decoding._Segments.MAX_SCORES, 0):
        monkeypatch.setattr(decoding._Segments, "MAX_SCORES", limit)
        engine, _ = _engines(model)
        rounds = [engine.generate(PROMPTS, sampled)]
        rounds.append(engine.generate(_second_round(rounds[0]), GREEDY))
        results.append(rounds)
        assert engine._decoder(model, False).reused_tokens > 0
        if limit:
            assert len(batched) == 2 * model.config.num_hidden_layers  # one prefill per round, every layer
            batched.clear()
    assert not batched
    for a, b in zip(*results):
        assert [g.ids for g in a] == [g.ids for g in b]
        for x, y in zip(a, b):
            assert x.logprobs == pytest.approx(y.logprobs, abs=1e-5)


def test_finished_rows_keep_only_the_key_values_they_wrote():
    """Rows dropped mid-call keep copies of their own columns (not the whole batch cache, which must be
    freed), and a next call that extends them decodes exactly as from scratch."""
    model = _model("qwen2")
    stop, calls = 1, []

    def pick(logits):  # argmax, but 3 of 5 rows stop at the 4th token and one more at the 9th: two drops
        calls.append(len(logits))
        token = logits.argmax(-1, keepdim=True).clamp(min=2)
        if len(calls) == 4:
            token[:3] = stop
        if len(calls) == 9:
            token[:1] = stop
        return token, torch.log_softmax(logits, -1).gather(-1, token).squeeze(-1)

    decoder = CachedDecoder(model)
    ids, _ = decoder.decode(PROMPTS, pick, max_new_tokens=12, stop_ids=[stop], pad_id=0)
    assert calls[4] == 2 and calls[9] == 1  # the batch shrank twice
    kept = {id(e.cache[0][0]): e.cache[0][0] for e in decoder._next}
    full = len(PROMPTS) * model.config.num_key_value_heads * (9 + 12) * (32 // 4)  # one layer's keys, whole batch
    assert sum(k.numel() for k in kept.values()) < full
    for e in decoder._next:  # every kept column is one the row wrote
        assert e.cache[0][0].shape[2] - e.start <= len(e.tokens) + 1

    def greedy(logits):
        token = logits.argmax(-1, keepdim=True).clamp(min=2)
        return token, torch.log_softmax(logits, -1).gather(-1, token).squeeze(-1)

    gen = [[t for t in row if t] for row in ids.tolist()]
    second = [p + g + [60, 61] for p, g in zip(PROMPTS, gen)]
    decoder.new_call()
    got = decoder.decode(second, greedy, max_new_tokens=6, stop_ids=[stop], pad_id=0)
    assert decoder.reused_tokens == sum(len(p) + len(g) - 1 for p, g in zip(PROMPTS, gen))  # all but the last token fed
    want = CachedDecoder(model).decode(second, greedy, max_new_tokens=6, stop_ids=[stop], pad_id=0)
    assert torch.equal(got[0], want[0])
    assert torch.allclose(got[1], want[1], atol=1e-5)


def test_kept_key_values_are_dropped_when_the_weights_change_or_on_forget():
    model = _model("qwen2")
    engine, _ = _engines(model)
    first = engine.generate(PROMPTS, GREEDY)
    with torch.no_grad():
        model.model.layers[0].mlp.down_proj.weight.mul_(3.0)  # an optimizer step does the same: in place
        model.model.layers[0].self_attn.q_proj.weight.mul_(3.0)  # a fused one too
    decoder = engine._decoder(model, False)
    before = decoder.reused_tokens
    got = engine.generate(_second_round(first), GREEDY)
    assert decoder.reused_tokens == before
    fresh, _ = _engines(model)
    assert [g.ids for g in got] == [g.ids for g in fresh.generate(_second_round(first), GREEDY)]
    engine.forget()
    engine.generate(_second_round(first, extra=(60,)), GREEDY)
    assert decoder.reused_tokens == before


def test_views_keep_separate_key_values():
    """With LoRA one model serves both views: a teacher call must not reuse the student's key/values."""
    model = _lora_model(["q_proj", "v_proj"])
    engine, reference = _engines(model)
    first = engine.generate(PROMPTS, GREEDY)
    second = _second_round(first)
    got = engine.generate(second, GREEDY, teacher=True)
    assert [g.ids for g in got] == [g.ids for g in reference.generate(second, GREEDY, teacher=True)]


def test_identical_prompts_are_prefilled_once_and_sampled_apart():
    model = tiny_model("byte", hidden=32, layers=2, mean_turn=6.0)
    engine, _ = _engines(model)
    gens = engine.generate([PROMPTS[0]] * 8, SamplingParams(temperature=1.0, max_new_tokens=12, seed=0))
    assert engine._decoder(model, False).prefill_tokens == len(PROMPTS[0])
    assert len({tuple(g.ids) for g in gens}) > 1


def test_a_prefix_all_prompts_share_is_computed_once():
    """A system prompt every prompt starts with is prefilled once and copied into each row: the same
    tokens and log-probabilities as transformers, and its tokens computed once."""
    model = _model("qwen2")
    with torch.no_grad():  # peaked attention, so that a key at the wrong position or row would show
        for layer in model.model.layers:
            layer.self_attn.q_proj.weight.mul_(8.0)
            layer.self_attn.k_proj.weight.mul_(8.0)
    system = list(range(100, 120))
    prompts = [system + p for p in PROMPTS]
    cached, reference = _engines(model)
    a, b = cached.generate(prompts, GREEDY), reference.generate(prompts, GREEDY)
    assert [g.ids for g in a] == [g.ids for g in b]
    for x, y in zip(a, b):
        assert x.logprobs == pytest.approx(y.logprobs, abs=1e-4)
    decoder = cached._decoder(model, False)
    unique = {tuple(p) for p in prompts}
    assert decoder.prefill_tokens == len(system) + sum(len(p) - len(system) for p in unique)
    # a prefix shorter than the threshold is not worth its own pass
    assert CachedDecoder._shared_prefix([tuple(p) for p in PROMPTS], [0] * len(PROMPTS)) == ()


@pytest.mark.parametrize("kind", ["gpt2", "gemma"])
def test_other_architectures_fall_back_to_generate(kind):
    """GPT-2 is laid out differently; Gemma has Llama's module names but scales its embeddings and norms."""
    from transformers import GemmaConfig, GemmaForCausalLM, GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=len(byte_tok()), n_embd=32, n_layer=1, n_head=2)).eval()
    else:
        model = GemmaForCausalLM(GemmaConfig(vocab_size=len(byte_tok()), hidden_size=32, intermediate_size=64,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             head_dim=8)).eval()
    assert not supports(model)
    with pytest.raises(ValueError, match="not a Llama-style decoder"):
        CachedDecoder(model)
    cached, reference = _engines(model)
    assert [g.ids for g in cached.generate(PROMPTS, GREEDY)] == [g.ids for g in reference.generate(PROMPTS, GREEDY)]


def test_cpu_threads_auto_and_explicit():
    from pbsd_agents.loading import idle_cores, set_cpu_threads

    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 == torch.get_num_threads()
        auto = set_cpu_threads(0)
        idle = idle_cores()
        assert auto == torch.get_num_threads() >= 1
        if idle is not None:
            import os

            assert 0 <= idle <= len(os.sched_getaffinity(0))
        with pytest.raises(ValueError, match="threads must be >= 0"):
            set_cpu_threads(-2)
    finally:
        torch.set_num_threads(before)


def test_free_cpus_counts_other_work_not_this_process():
    from pbsd_agents.loading import free_cpus

    assert free_cpus((0, 0), (400, 400), cpus=4) == 4  # idle
    assert free_cpus((0, 0), (400, 100), cpus=4) == 1  # three cores busy with other work
    assert free_cpus((0, 0), (400, 100), own_cores=3.0, cpus=4) == 4  # the busy time was ours
    assert free_cpus((0, 0), (400, 100), own_cores=1.0, cpus=4) == 2
    assert free_cpus((0, 0), (400, 0), cpus=4) == 0  # everything busy
    assert free_cpus((10, 5), (10, 5), cpus=3) == 3  # no time passed: no evidence of load


def test_cpu_times_count_only_the_cpus_asked_for():
    import os

    from pbsd_agents.loading import _cpu_times

    if _cpu_times() is None or not hasattr(os, "sched_getaffinity"):
        pytest.skip("needs /proc/stat")
    one = _cpu_times({min(os.sched_getaffinity(0))})
    everything = _cpu_times()  # read second: the machine's count can only have grown
    assert one is not None and 0 < one[0] <= everything[0] and 0 <= one[1] <= one[0]
    assert _cpu_times({10**6}) is None  # no such CPU: nothing to go by


def test_auto_threads_follow_the_load_of_other_processes():
    import os
    import subprocess
    import sys
    import time

    from pbsd_agents.loading import CpuThreads, _cpu_times

    usable = len(os.sched_getaffinity(0))
    if usable < 2 or _cpu_times() is None:
        pytest.skip("needs /proc/stat and two usable CPUs")
    before = torch.get_num_threads()
    try:
        threads = CpuThreads(0)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another job on one core
        try:
            time.sleep(1.0)
            assert threads.update() <= usable - 1 and threads.count == torch.get_num_threads()
        finally:
            spinner.kill()
            spinner.wait()
        assert CpuThreads(3).update() == 3 == torch.get_num_threads()  # a fixed count never moves
    finally:
        torch.set_num_threads(before)


# ---- both views in one decode loop ----------------------------------------------------------------

VIEWS = [False, True, True, False, True]  # teacher flags for PROMPTS: unequal counts, a repeated prompt


def _student_and_teacher(kind: str = "qwen2"):
    """A policy whose student has moved away from its frozen teacher copy (so the two views differ)."""
    model = _model(kind)
    policy = Policy(model, byte_tok())  # frozen_teacher: a teacher module of its own
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return policy


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
def test_mixed_views_decode_each_row_with_its_views_weights(kind):
    policy = _student_and_teacher(kind)
    engine = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids)
    mixed = engine.generate(PROMPTS, GREEDY, teacher=VIEWS)
    student = engine._decoder(policy.model, False)
    assert student._stack is not None  # the views' weights ran stacked
    for view in (False, True):
        rows = [i for i, v in enumerate(VIEWS) if v == view]
        alone = engine.generate([PROMPTS[i] for i in rows], GREEDY, teacher=view)
        assert [mixed[i].ids for i in rows] == [g.ids for g in alone]
        for i, g in zip(rows, alone):
            assert mixed[i].logprobs == pytest.approx(g.logprobs, abs=1e-4)
    assert [g.ids for g in engine.generate(PROMPTS, GREEDY)] != [g.ids for g in engine.generate(PROMPTS, GREEDY, teacher=True)]


def test_mixed_views_sample_exactly_the_distribution_of_each_view():
    """At T=1 each row's log-probability is its own view's, recomputed by a plain forward."""
    from pbsd_agents.algorithms.scoring import sequence_logprobs

    policy = _student_and_teacher()
    engine = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids)
    out = engine.generate(PROMPTS, SamplingParams(temperature=1.0, max_new_tokens=12, seed=3), teacher=VIEWS)
    for p, g, view in zip(PROMPTS, out, VIEWS):
        with policy.teacher() if view else policy.student() as model:
            _, (per_token,) = sequence_logprobs(model, [(p + g.ids, [0] * len(p) + [1] * len(g.ids))])
        assert g.logprobs == pytest.approx(per_token.tolist(), abs=1e-4)


def test_mixed_views_reuse_each_views_key_values_in_the_next_round():
    policy = _student_and_teacher()
    engine = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids)
    first = engine.generate(PROMPTS, GREEDY, teacher=VIEWS)
    second = _second_round(first)
    decoders = [engine._decoder(policy.model, False)]
    with policy.teacher() as teacher:
        decoders.append(engine._decoder(teacher, True))
    before = [d.reused_tokens for d in decoders]
    got = engine.generate(second, GREEDY, teacher=VIEWS)
    assert all(d.reused_tokens > b for d, b in zip(decoders, before))
    fresh = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids)
    assert [g.ids for g in got] == [g.ids for g in fresh.generate(second, GREEDY, teacher=VIEWS)]


@pytest.mark.parametrize("change", ["float64", "teacher eps"])
def test_views_that_cannot_stack_decode_one_after_the_other(change):
    """float64 weights are not folded, and a teacher whose norms compute otherwise cannot share the
    student's arithmetic: the stack is refused, and each view decodes alone, with its own arithmetic."""
    policy = _student_and_teacher()
    with policy.teacher() as teacher:
        if change == "float64":
            policy.model.to(torch.float64)
            teacher.to(torch.float64)
        else:
            for module in teacher.modules():
                if hasattr(module, "variance_epsilon"):
                    module.variance_epsilon = 0.5
    engine = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids)
    mixed = engine.generate(PROMPTS, GREEDY, teacher=VIEWS)
    assert engine._decoder(policy.model, False)._stack is None
    for view in (False, True):
        rows = [i for i, v in enumerate(VIEWS) if v == view]
        assert [mixed[i].ids for i in rows] == [g.ids for g in engine.generate([PROMPTS[i] for i in rows], GREEDY, teacher=view)]


def test_mixed_views_with_lora_run_one_view_at_a_time():
    model = _lora_model(["q_proj", "v_proj"])
    engine = HFEngine(Policy(model, byte_tok()), stop_ids=renderer_for("byte").stop_ids)
    mixed = engine.generate(PROMPTS, GREEDY, teacher=VIEWS)
    for view in (False, True):
        rows = [i for i, v in enumerate(VIEWS) if v == view]
        assert [mixed[i].ids for i in rows] == [g.ids for g in engine.generate([PROMPTS[i] for i in rows], GREEDY, teacher=view)]
    with pytest.raises(ValueError, match="teacher flags"):
        engine.generate(PROMPTS, GREEDY, teacher=[True])


def test_when_one_view_is_done_the_other_goes_on_alone(monkeypatch):
    """Teacher rows stop early (their third greedy token is a stop id), student rows run on: the loop
    drops the teacher's rows and continues with the student's decoder alone; tokens, log-probabilities
    and the next round's reuse are as if each view had decoded by itself."""
    from pbsd_agents import decoding

    policy = _student_and_teacher()
    probe = HFEngine(policy, stop_ids=[0])
    rows = {view: [i for i, v in enumerate(VIEWS) if v == view] for view in (False, True)}
    teacher_alone = probe.generate([PROMPTS[i] for i in rows[True]], GREEDY, teacher=True)
    stops = sorted({g.ids[2] for g in teacher_alone})
    student_alone = HFEngine(policy, stop_ids=stops).generate([PROMPTS[i] for i in rows[False]], GREEDY)
    assert all(len(g.ids) > 3 for g in student_alone)  # the students run past the teachers' stops
    left = []
    rows_to_keep = decoding._rows_to_keep
    monkeypatch.setattr(decoding, "_rows_to_keep", lambda *a: left.append(rows_to_keep(*a)[1]) or rows_to_keep(*a))
    engine = HFEngine(policy, stop_ids=stops)
    first = engine.generate(PROMPTS, GREEDY, teacher=VIEWS)
    assert 0 in left  # the student view went on alone
    for view in (False, True):
        alone = HFEngine(policy, stop_ids=stops).generate([PROMPTS[i] for i in rows[view]], GREEDY, teacher=view)
        assert [first[i].ids for i in rows[view]] == [g.ids for g in alone]
        for i, g in zip(rows[view], alone):
            assert first[i].logprobs == pytest.approx(g.logprobs, abs=1e-4)
    second = _second_round(first)
    fresh = HFEngine(policy, stop_ids=stops)
    assert [g.ids for g in engine.generate(second, GREEDY, teacher=VIEWS)] == \
        [g.ids for g in fresh.generate(second, GREEDY, teacher=VIEWS)]


def test_views_far_apart_in_size_stack_with_padding_rows(monkeypatch):
    """One teacher row against three student rows: two padding rows, whose output goes nowhere."""
    policy = _student_and_teacher()
    engine = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids)
    stacked = []
    step = CachedDecoder._step
    monkeypatch.setattr(CachedDecoder, "_step", lambda self, *a: stacked.append(a[5] is not None) or step(self, *a))
    views = [True, False, False, False]
    mixed = engine.generate(PROMPTS[:4], GREEDY, teacher=views)
    assert stacked[0]
    for view in (False, True):
        rows = [i for i, v in enumerate(views) if v == view]
        assert [mixed[i].ids for i in rows] == [g.ids for g in engine.generate([PROMPTS[i] for i in rows], GREEDY, teacher=view)]


def test_batches_of_mixed_views_hold_a_share_of_each_view(monkeypatch):
    """With more prompts than ``batch_size``, each batch gets its share of both views, so each stacks."""
    from pbsd_agents import decoding

    policy = _student_and_teacher()
    engine = HFEngine(policy, stop_ids=renderer_for("byte").stop_ids, batch_size=4)
    calls = []
    decode_views = decoding.decode_views
    monkeypatch.setattr(decoding, "decode_views", lambda d, p, v, *a, **k: calls.append(list(v)) or decode_views(d, p, v, *a, **k))
    prompts = PROMPTS[:4] + [p + [3] for p in PROMPTS[:4]]
    views = [False] * 4 + [True] * 4
    mixed = engine.generate(prompts, GREEDY, teacher=views)
    assert [sorted(v) for v in calls] == [[0, 0, 1, 1], [0, 0, 1, 1]]
    for view in (False, True):
        rows = [i for i, v in enumerate(views) if v == view]
        assert [mixed[i].ids for i in rows] == [g.ids for g in engine.generate([prompts[i] for i in rows], GREEDY, teacher=view)]
