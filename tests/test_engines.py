"""The engine contract, run on every engine: HFEngine on CPU (always), HFEngine on CUDA and VLLMEngine
(each skipped without a GPU / without vLLM). Log-probabilities are checked against a teacher-forced
forward pass of the same weights."""

import copy
import importlib.util

import pytest
import torch

from tests.support import byte_tok, renderer_for, tiny_model

from pbsd_agents.engines import Engine, Generation, HFEngine, SamplingParams, VLLMEngine, cut_at_stop
from pbsd_agents.loading import build_tiny_model
from pbsd_agents.models import Policy

HAS_CUDA = torch.cuda.is_available()
HAS_VLLM = importlib.util.find_spec("vllm") is not None
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [40, 41], [70, 71, 72, 73], [40, 41]]


def make_engine(kind, model, tmp_path_factory=None):
    tok = byte_tok()
    if kind == "hf-cpu":
        return HFEngine(Policy(model, tok), stop_ids=renderer_for("byte").stop_ids)
    if kind == "hf-generate-cpu":  # the previous engine (transformers generate), kept for comparison
        return HFEngine(Policy(model, tok), stop_ids=renderer_for("byte").stop_ids, decode="generate")
    if kind == "hf-cuda":
        return HFEngine(Policy(copy.deepcopy(model).cuda(), tok), stop_ids=renderer_for("byte").stop_ids)
    if kind == "vllm":
        folder = tmp_path_factory.mktemp("vllm-model")
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
        return VLLMEngine(str(folder), stop_ids=renderer_for("byte").stop_ids, max_lora_rank=0, dtype="float32",
                          gpu_memory_utilization=0.3, enforce_eager=True)
    raise ValueError(kind)


ENGINES = [
    pytest.param("hf-cpu"),
    pytest.param("hf-generate-cpu"),
    pytest.param("hf-cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]),
    pytest.param("vllm", marks=[pytest.mark.gpu, pytest.mark.skipif(not (HAS_CUDA and HAS_VLLM), reason="needs vLLM and a CUDA GPU")]),
]


@pytest.fixture(scope="module", params=ENGINES)
def engine(request, tmp_path_factory):
    return make_engine(request.param, tiny_model("byte", mean_turn=6.0), tmp_path_factory)


def forward_logprobs(prompt, ids, temperature=1.0):
    """log-probs of ``ids`` after ``prompt`` under softmax(logits / T) of the shared tiny model (CPU, fp32)."""
    model = tiny_model("byte", mean_turn=6.0)
    x = torch.tensor([list(prompt) + list(ids)])
    with torch.no_grad():
        logits = model(x).logits[0, len(prompt) - 1: -1].float()
    lp = torch.log_softmax(logits / temperature, dim=-1)
    return lp.gather(-1, torch.tensor(ids).unsqueeze(-1)).squeeze(-1).tolist()


def test_engine_protocol(engine):
    assert isinstance(engine, Engine)
    assert engine.generate([], SamplingParams()) == []


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shapes_stops_and_exact_logprobs(engine, temperature):
    stops = set(engine.stop_ids)
    gens = engine.generate(PROMPTS, SamplingParams(temperature=temperature, max_new_tokens=12, seed=1))
    assert len(gens) == len(PROMPTS)
    for p, g in zip(PROMPTS, gens):
        assert isinstance(g, Generation) and 1 <= len(g.ids) <= 12 and len(g.logprobs) == len(g.ids)
        assert not any(t in stops for t in g.ids[:-1]), "a row continues after its stop token"
        assert g.finished == (g.ids[-1] in stops)
        if not g.finished:
            assert len(g.ids) == 12
        # the sampled ids' log-probabilities under the distribution sampled from (after temperature)
        assert g.logprobs == pytest.approx(forward_logprobs(p, g.ids, temperature), abs=2e-4)


def test_turns_end_at_the_stop_token(engine):
    gens = engine.generate(PROMPTS * 4, SamplingParams(max_new_tokens=40, seed=3))
    finished = [g for g in gens if g.finished]
    assert finished, "the tiny model (mean turn 6 tokens) should end some turns within 40 tokens"
    assert all(g.ids[-1] in engine.stop_ids for g in finished)


def test_greedy_is_deterministic_and_reports_t1_logprobs(engine):
    s = SamplingParams(temperature=0.0, max_new_tokens=8)
    a, b = engine.generate(PROMPTS, s), engine.generate(PROMPTS, s)
    assert [g.ids for g in a] == [g.ids for g in b]
    model = tiny_model("byte", mean_turn=6.0)
    for p, g in zip(PROMPTS, a):
        with torch.no_grad():
            logits = model(torch.tensor([p + g.ids])).logits[0, len(p) - 1: -1]
        assert g.ids == logits.argmax(-1).tolist()[: len(g.ids)]
        assert g.logprobs == pytest.approx(forward_logprobs(p, g.ids, 1.0), abs=2e-4)


def test_left_padding_does_not_change_greedy_rows(engine):
    s = SamplingParams(temperature=0.0, max_new_tokens=8)
    together = engine.generate(PROMPTS, s)
    alone = [engine.generate([p], s)[0] for p in PROMPTS]
    assert [g.ids for g in together] == [g.ids for g in alone]


def test_seed_reproduces_and_rows_differ(engine):
    s = SamplingParams(max_new_tokens=10, seed=7)
    a, b = engine.generate(PROMPTS, s), engine.generate(PROMPTS, s)
    assert [g.ids for g in a] == [g.ids for g in b]
    c = engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, seed=8))
    assert [g.ids for g in a] != [g.ids for g in c]
    many = engine.generate([PROMPTS[1]] * 6, SamplingParams(max_new_tokens=10, seed=7))
    assert len({tuple(g.ids) for g in many}) > 1, "identical prompts must get independent samples"


def test_top_k_one_is_greedy_with_logprob_zero(engine):
    greedy = engine.generate(PROMPTS, SamplingParams(temperature=0.0, max_new_tokens=6))
    topk = engine.generate(PROMPTS, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=6, seed=0))
    assert [g.ids for g in topk] == [g.ids for g in greedy]
    assert all(lp == pytest.approx(0.0, abs=1e-5) for g in topk for lp in g.logprobs)


def _one_sum_inversion(logp, generator):
    """The sampler's definition: one float64 cumulative sum over each row, searched at u * total."""
    cdf = logp.exp().double().cumsum(-1)
    u = torch.rand((len(logp), 1), generator=generator, dtype=torch.float64)
    return torch.searchsorted(cdf, u * cdf[:, -1:], right=True)


def test_large_vocabularies_are_sampled_in_two_levels_alike():
    from pbsd_agents.engines import FLAT_CDF_MAX, _inverse_cdf_sample

    vocab = 3 * FLAT_CDF_MAX + 77  # blocks of 256 and a shorter last block
    torch.manual_seed(0)
    logits = torch.randn(64, vocab) * torch.tensor([0.5, 2.0, 6.0, 12.0]).repeat(16)[:, None]
    logits[::5, vocab // 3:] = float("-inf")  # rows with whole blocks of zero probability
    logp = torch.log_softmax(logits, -1)
    for seed in range(10):
        a = _inverse_cdf_sample(logp, torch.Generator().manual_seed(seed))
        b = _one_sum_inversion(logp, torch.Generator().manual_seed(seed))
        assert torch.equal(a, b)
        assert torch.isfinite(logp.gather(1, a)).all()


def test_two_level_sampling_draws_each_token_at_its_probability_and_never_a_zero_one():
    from pbsd_agents.engines import FLAT_CDF_MAX, _inverse_cdf_sample

    vocab = FLAT_CDF_MAX + 100
    # mass on the edges of blocks (size 128 here) and in the last, shorter block; the rest is zero
    tokens = torch.tensor([0, 127, 128, 255, vocab - 100, vocab - 1])
    probs = torch.tensor([0.05, 0.3, 0.1, 0.25, 0.2, 0.1])
    logp = torch.full((4000, vocab), float("-inf"))
    logp[:, tokens] = probs.log()
    drawn = _inverse_cdf_sample(logp, torch.Generator().manual_seed(0)).view(-1)
    assert set(drawn.tolist()) <= set(tokens.tolist())
    freq = torch.stack([(drawn == t).float().mean() for t in tokens])
    assert torch.allclose(freq, probs, atol=0.025)  # 4,000 draws: a standard error of at most 0.008


# ---- HFEngine only -----------------------------------------------------------------------------


def test_hf_ignores_the_models_generation_config():
    # a checkpoint's generation_config.json may set top_k / repetition_penalty: sampling must stay on-policy
    model = copy.deepcopy(tiny_model("byte", mean_turn=6.0))
    model.generation_config.top_k = 3
    model.generation_config.repetition_penalty = 3.0
    model.generation_config.do_sample = True
    engine = HFEngine(Policy(model, byte_tok(), frozen_teacher=False), stop_ids=renderer_for("byte").stop_ids)
    for p, g in zip(PROMPTS, engine.generate(PROMPTS, SamplingParams(max_new_tokens=10, seed=0))):
        assert g.logprobs == pytest.approx(forward_logprobs(p, g.ids), abs=2e-4)
    assert model.generation_config.top_k == 3  # restored


def test_hf_top_p_logprobs_are_renormalised():
    engine = HFEngine(Policy(tiny_model("byte", mean_turn=6.0), byte_tok(), frozen_teacher=False),
                      stop_ids=renderer_for("byte").stop_ids)
    for p, g in zip(PROMPTS, engine.generate(PROMPTS, SamplingParams(top_p=0.5, max_new_tokens=6, seed=0))):
        full = forward_logprobs(p, g.ids)
        # truncating the distribution can only raise the sampled ids' probabilities
        assert all(a >= b - 1e-5 for a, b in zip(g.logprobs, full))


def test_hf_teacher_uses_the_frozen_weights():
    tok = byte_tok()
    model = build_tiny_model(tok, hidden_size=32, num_layers=1, eot_mean_length=6.0, eot_token="<|im_end|>")
    policy = Policy(model, tok)  # frozen copy of θ0 is the teacher
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # the student moves away
    engine = HFEngine(policy)
    s = SamplingParams(temperature=0.0, max_new_tokens=6)
    student, teacher = engine.generate(PROMPTS, s), engine.generate(PROMPTS, s, teacher=True)
    for p, g in zip(PROMPTS, teacher):
        with torch.no_grad():
            lp = torch.log_softmax(policy._teacher_copy(torch.tensor([p + g.ids])).logits[0, len(p) - 1: -1], -1)
        assert g.logprobs == pytest.approx(lp.gather(-1, torch.tensor(g.ids)[:, None]).squeeze(-1).tolist(), abs=2e-4)
    assert len(student) == len(teacher)
    model.train()
    engine.generate(PROMPTS[:1], s)
    assert model.training, "generate must restore the model's train/eval mode"


def test_hf_lora_teacher_is_the_base_model():
    from peft import LoraConfig, get_peft_model

    tok = byte_tok()
    base = build_tiny_model(tok, hidden_size=32, num_layers=1, eot_mean_length=6.0, eot_token="<|im_end|>")
    ref = copy.deepcopy(base)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    engine = HFEngine(Policy(peft_model, tok))
    s = SamplingParams(temperature=0.0, max_new_tokens=5)
    for p, g in zip(PROMPTS, engine.generate(PROMPTS, s, teacher=True)):
        with torch.no_grad():
            lp = torch.log_softmax(ref(torch.tensor([p + g.ids])).logits[0, len(p) - 1: -1], -1)
        assert g.logprobs == pytest.approx(lp.gather(-1, torch.tensor(g.ids)[:, None]).squeeze(-1).tolist(), abs=2e-4)


def test_hf_batch_size_splits_and_keeps_order():
    policy = Policy(tiny_model("byte", mean_turn=6.0), byte_tok(), frozen_teacher=False)
    s = SamplingParams(temperature=0.0, max_new_tokens=5)
    a = HFEngine(policy, batch_size=1, stop_ids=[256]).generate(PROMPTS, s)
    b = HFEngine(policy, batch_size=64, stop_ids=[256]).generate(PROMPTS, s)
    assert [g.ids for g in a] == [g.ids for g in b]


def test_hf_rejects_empty_prompts_and_bad_params():
    engine = HFEngine(Policy(tiny_model("byte"), byte_tok(), frozen_teacher=False))
    with pytest.raises(ValueError, match="at least one token"):
        engine.generate([[]], SamplingParams())
    with pytest.raises(ValueError, match="batch_size"):
        HFEngine(engine.policy, batch_size=0)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": -1}, "temperature"), ({"top_k": -1}, "top_k"), ({"top_p": 0}, "top_p"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
])
def test_sampling_params_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SamplingParams(**kwargs)


def test_cut_at_stop_and_generation_checks():
    assert cut_at_stop([1, 2, 3], [-1.0, -1.0, -1.0], [2]) == Generation([1, 2], [-1.0, -1.0], True)
    with pytest.raises(ValueError, match="logprobs"):
        Generation([1, 2], [-1.0], False)


def test_vllm_engine_without_vllm_is_a_clear_error():
    if HAS_VLLM:
        pytest.skip("vLLM is installed")
    with pytest.raises(ImportError, match="pbsd-agents\\[vllm\\]"):
        VLLMEngine("some/model")
