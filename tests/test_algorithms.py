"""Losses against independent computations, on random logits and masks and on a tiny real model."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from pbsd_agents.algorithms import GRPO, OPSD, PBSD, SFT, Batch, GRPOConfig, OPSDConfig, PBSDConfig, SFTConfig, TaskGroup
from pbsd_agents.algorithms.grpo import group_advantages
from pbsd_agents.algorithms.opsd import generalized_jsd
from pbsd_agents.models import Policy
from pbsd_agents.trajectory import Segment, Trajectory

V = 11


class LogitsTable(torch.nn.Module):
    """A 'model' whose logits are free parameters indexed by (sequence id, position).

    The first input id of each view names its row in the table, so gradients with respect to the
    logits at every position can be read off ``table.grad`` directly.
    """

    def __init__(self, rows: int, length: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.nn.Parameter(torch.randn(rows, length, V, generator=g))

    def forward(self, input_ids, attention_mask=None):
        rows = input_ids[:, 0]
        return SimpleNamespace(logits=self.table[rows, : input_ids.shape[1]])


def random_traj(row: int, source: str, gen: torch.Generator, reward: float = 0.0) -> Trajectory:
    """A trajectory whose first id is ``row``; random segments; student and teacher prompts of different lengths."""
    def ids(n):
        return torch.randint(1, V, (n,), generator=gen).tolist()

    segs = []
    for k in range(int(torch.randint(1, 4, (1,), generator=gen))):
        if k:
            segs.append(Segment("observation", ids(int(torch.randint(1, 4, (1,), generator=gen)))))
        n = int(torch.randint(1, 5, (1,), generator=gen))
        segs.append(Segment("action", ids(n), [-1.0] * n))
    return Trajectory("e", f"t{row}", source, "p", [row] + ids(2), [row] + ids(4), segs, reward=reward, success=reward == 1.0)


def manual_logprob(table: torch.Tensor, row: int, view) -> torch.Tensor:
    ids, mask = view
    lp = F.log_softmax(table[row], dim=-1)
    return sum(lp[t - 1, ids[t]] for t in range(1, len(ids)) if mask[t])


@pytest.mark.parametrize("seed", range(5))
def test_pbsd_loss_matches_independent_dpo_and_masks_gradients(seed):
    gen = torch.Generator().manual_seed(seed)
    n_pairs, beta = 3, 0.3
    groups = []
    for i in range(n_pairs):
        groups.append(TaskGroup(i, student=[random_traj(2 * i + 1, "student", gen)], teacher=[random_traj(2 * i, "teacher", gen)]))
    student = LogitsTable(2 * n_pairs, 40, seed)
    policy = Policy(student, tokenizer=None)
    with torch.no_grad():
        policy._teacher_copy.table.copy_(torch.randn(2 * n_pairs, 40, V, generator=gen))
    algo = PBSD(PBSDConfig(beta=beta))
    loss, metrics = algo.loss(Batch(groups), policy)

    s_tab, t_tab = student.table.detach(), policy._teacher_copy.table.detach()
    expected = 0.0
    for g in groups:
        pos, neg = g.teacher[0], g.student[0]
        rp, rn = pos.student_prompt_ids[0], neg.student_prompt_ids[0]
        h_pos = manual_logprob(s_tab, rp, pos.student_view()) - manual_logprob(t_tab, rp, pos.teacher_view())
        h_neg = manual_logprob(s_tab, rn, neg.student_view()) - manual_logprob(t_tab, rn, neg.teacher_view())
        expected += -math.log(1 / (1 + math.exp(-beta * (h_pos - h_neg).item())))
    assert loss.item() == pytest.approx(expected / n_pairs, rel=1e-5)
    assert metrics["num_pairs"] == n_pairs

    loss.backward()
    grad = student.table.grad
    for g in groups:
        for t in (g.teacher[0], g.student[0]):
            ids, mask = t.student_view()
            row = ids[0]
            predicts_action = {p - 1 for p in range(1, len(ids)) if mask[p]}
            for pos in range(grad.shape[1]):
                if pos not in predicts_action:
                    assert torch.all(grad[row, pos] == 0), f"gradient leaked to non-action position {pos}"
            assert any(grad[row, p].abs().sum() > 0 for p in predicts_action)


def test_pbsd_verifier_pairs_and_options():
    gen = torch.Generator().manual_seed(0)
    g1 = TaskGroup(0, student=[random_traj(1, "student", gen, reward=1.0)], teacher=[random_traj(0, "teacher", gen, reward=0.0)])
    g2 = TaskGroup(1, student=[random_traj(3, "student", gen, reward=1.0)], teacher=[random_traj(2, "teacher", gen, reward=1.0)])
    algo = PBSD(PBSDConfig(pair_filter="verifier"))
    pairs = algo.pairs(Batch([g1, g2]))
    assert len(pairs) == 1 and pairs[0][0].source == "student"  # higher reward wins; equal rewards dropped
    policy = Policy(LogitsTable(4, 40, 0), tokenizer=None)
    loss, m = PBSD(PBSDConfig(nll_coef=0.5, length_normalize=True)).loss(Batch([g1, g2]), policy)
    assert torch.isfinite(loss) and "nll_pos" in m
    empty = TaskGroup(2, student=[], teacher=[])
    assert PBSD(PBSDConfig()).loss(Batch([empty]), policy)[0] is None
    with pytest.raises(ValueError, match="pair_filter"):
        PBSDConfig(pair_filter="best")


def brute_force_jsd(s_logits, t_logits, beta):
    s, t = s_logits.softmax(-1).double(), t_logits.softmax(-1).double()
    if beta == 0:
        return (t * (t / s).log()).sum(-1)
    if beta == 1:
        return (s * (s / t).log()).sum(-1)
    m = beta * t + (1 - beta) * s
    return beta * (t * (t / m).log()).sum(-1) + (1 - beta) * (s * (s / m).log()).sum(-1)


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0, 0.2])
def test_opsd_divergence_matches_brute_force(beta):
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(7, V, generator=g), torch.randn(7, V, generator=g)
    assert torch.allclose(generalized_jsd(s, t, beta).double(), brute_force_jsd(s, t, beta), atol=1e-5)


def test_opsd_loss_runs_and_is_zero_when_teacher_equals_student():
    gen = torch.Generator().manual_seed(3)
    groups = [TaskGroup(i, student=[random_traj(i, "student", gen)]) for i in range(3)]
    policy = Policy(LogitsTable(3, 40, 0), tokenizer=None)
    loss, m = OPSD(OPSDConfig(beta=0.5, top_k=5, clip=10.0)).loss(Batch(groups), policy)
    assert loss.item() > 0
    # Same table for teacher and student, but the teacher view has a longer prompt: positions differ,
    # so compare on a policy whose table is constant along positions.
    flat = LogitsTable(3, 40, 0)
    with torch.no_grad():
        flat.table.copy_(flat.table[:, :1].expand_as(flat.table))
    loss0, _ = OPSD(OPSDConfig()).loss(Batch(groups), Policy(flat, tokenizer=None))
    assert abs(loss0.item()) < 1e-6


def test_grpo_advantages_are_group_normalised():
    adv = torch.tensor(group_advantages([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]))
    assert abs(adv.mean().item()) < 1e-6
    assert adv.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-3)
    gen = torch.Generator().manual_seed(0)
    groups = [TaskGroup(0, student=[random_traj(i, "student", gen, reward=float(i % 2)) for i in range(4)])]
    loss, m = GRPO(GRPOConfig(group_size=4)).loss(Batch(groups), Policy(LogitsTable(4, 40, 0), tokenizer=None))
    assert torch.isfinite(loss) and m["informative_frac"] == 1.0
    flat = [TaskGroup(0, student=[random_traj(i, "student", gen, reward=1.0) for i in range(4)])]
    assert GRPO(GRPOConfig()).loss(Batch(flat), Policy(LogitsTable(4, 40, 0), tokenizer=None))[0] is None


def test_sft_uses_only_successful_teacher_samples():
    gen = torch.Generator().manual_seed(0)
    good, bad = random_traj(0, "teacher", gen, reward=1.0), random_traj(1, "teacher", gen, reward=0.0)
    batch = Batch([TaskGroup(0, teacher=[good]), TaskGroup(1, teacher=[bad])])
    assert SFT(SFTConfig()).select(batch) == [good]
    assert SFT(SFTConfig(only_successful=False)).select(batch) == [good, bad]
    model = LogitsTable(2, 40, 0)
    loss, m = SFT(SFTConfig()).loss(batch, Policy(model, tokenizer=None))
    loss.backward()
    assert m["num_used"] == 1
    assert model.table.grad[1].abs().sum() == 0  # the failed sample's row gets no gradient
    assert SFT(SFTConfig()).loss(Batch([TaskGroup(1, teacher=[bad])]), Policy(model, tokenizer=None))[0] is None


def test_lora_teacher_is_frozen_student_moves():
    peft = pytest.importorskip("peft")
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    base = Qwen2ForCausalLM(Qwen2Config(vocab_size=V + 5, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2))
    model = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    policy = Policy(model, tokenizer=None)
    gen = torch.Generator().manual_seed(0)
    groups = [TaskGroup(i, student=[random_traj(i, "student", gen)], teacher=[random_traj(i, "teacher", gen)]) for i in range(3)]
    algo = PBSD(PBSDConfig(beta=1.0))
    views = [t.teacher_view() for t in Batch(groups).trajectories]
    from pbsd_agents.algorithms.scoring import sequence_logprobs

    def teacher_lp():
        with torch.no_grad(), policy.teacher() as t:
            return sequence_logprobs(t, views)[0]

    def student_lp():
        with torch.no_grad():
            return sequence_logprobs(policy.model, views)[0]

    t0, s0 = teacher_lp(), student_lp()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        loss, _ = algo.loss(Batch(groups), policy)
        loss.backward()
        opt.step()
    assert torch.equal(teacher_lp(), t0)
    assert not torch.allclose(student_lp(), s0)


def test_length_groups_run_like_one_padded_batch():
    """Views of very different lengths run in several batches; log-probs and gradients are those of one batch."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from pbsd_agents.algorithms.scoring import length_groups, sequence_logprobs

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    gen = torch.Generator().manual_seed(1)
    views = []
    for n in (300, 20, 290, 25, 310, 22):
        ids = torch.randint(1, 32, (n,), generator=gen).tolist()
        views.append((ids, [int(i % 3 == 0) for i in range(n)]))
    assert len(length_groups([len(ids) for ids, _ in views])) == 2
    total, per_token = sequence_logprobs(model, views)
    total.sum().backward()
    grouped = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i, view in enumerate(views):  # one at a time: no padding at all
        one, one_tokens = sequence_logprobs(model, [view])
        assert one.item() == pytest.approx(total[i].item(), abs=1e-3)
        assert torch.allclose(one_tokens[0], per_token[i], atol=1e-4)
        one.sum().backward()
    for a, p in zip(grouped, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-4)


@pytest.mark.parametrize("kind, attn", [("qwen2", "sdpa"), ("qwen2", "eager"), ("llama", "sdpa")])
def test_views_sharing_a_prompt_score_as_if_apart(kind, attn):
    """Views that start with the same prompt run it once, packed in one row; each one's log-probs and
    gradients are those it gets scored alone."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from pbsd_agents.algorithms.scoring import sequence_logprobs, shared_prefix_rows

    torch.manual_seed(0)
    config, cls = (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    model = cls(config(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, attn_implementation=attn))
    gen = torch.Generator().manual_seed(1)

    def rand(n):
        return torch.randint(1, 32, (n,), generator=gen).tolist()

    prompts = [rand(80), rand(60)]
    views = []
    for prompt, tails in zip(prompts, ((30, 25, 1), (40, 12))):
        for n in tails:  # an action token right after the prompt: predicted by the prompt's last token
            tail = rand(n)
            views.append((prompt + tail, [0] * len(prompt) + [int(i % 4 != 3) for i in range(n)]))
    turn = rand(40)  # a multi-turn pair whose first turn is the same: action tokens inside the shared prefix
    mask = [0] * 40 + [1] * 10 + [0] * 5 + [1] * 15
    views += [(turn + rand(30), mask), (turn + rand(30), mask), (turn + rand(30), mask)]
    views += [views[0], (rand(2), [0, 1]), (rand(50), [0] * 20 + [1] * 30)]  # the same view twice; lone views
    rows = shared_prefix_rows([ids for ids, _ in views])
    assert sorted(len(m) for _, m in rows) == [1, 1, 2, 3, 4]
    total, per_token = sequence_logprobs(model, views)
    total.sum().backward()
    packed = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for i, view in enumerate(views):
        one, one_tokens = sequence_logprobs(model, [view])
        assert torch.allclose(one_tokens[0], per_token[i], atol=1e-5)
        one.sum().backward()
    for a, p in zip(packed, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-5)


def test_models_with_a_sliding_window_are_not_packed():
    """A sliding window is part of the model's own mask, which a packed row's mask would replace."""
    from transformers import MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from pbsd_agents.algorithms.scoring import _packable

    common = dict(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1)
    assert not _packable(MistralForCausalLM(MistralConfig(sliding_window=16, **common)))
    assert _packable(MistralForCausalLM(MistralConfig(sliding_window=None, **common)))
    assert _packable(Qwen2ForCausalLM(Qwen2Config(sliding_window=16, use_sliding_window=False, **common)))


def test_shared_prefix_rows_keep_rows_cheap():
    """A row shares a prefix of at least SHARED_PREFIX_MIN tokens, its continuations add up to at most
    ``ratio`` times the prefix's length, and every member keeps a token of its own."""
    from pbsd_agents.algorithms.scoring import PACK_RATIO, SHARED_PREFIX_MIN, shared_prefix_rows

    prompt = list(range(1, 61))
    assert shared_prefix_rows([prompt[: SHARED_PREFIX_MIN - 1] + [1], prompt[: SHARED_PREFIX_MIN - 1] + [2]]) == \
        [(0, [0]), (0, [1])]  # too short a prefix to share
    assert shared_prefix_rows([prompt + [7] * 40, prompt + [8] * 40], ratio=1.0) == [(0, [0]), (0, [1])]  # 80 > 60
    assert shared_prefix_rows([prompt + [7] * 40, prompt + [8] * 20, prompt + [9] * 20], ratio=1.0) == \
        [(60, [0, 1]), (0, [2])]
    long = int(PACK_RATIO * 60) // 2
    assert shared_prefix_rows([prompt + [7] * long, prompt + [8] * long]) == [(60, [0, 1])]
    assert shared_prefix_rows([prompt + [7] * long, prompt + [8] * (long + 1)]) == [(0, [0]), (0, [1])]
    assert shared_prefix_rows([prompt, prompt]) == [(59, [0, 1])]  # the same sequence twice
    for prefix, members in shared_prefix_rows([prompt[:k] + [99] for k in range(40, 61, 5)]):
        assert prefix == 0 or prefix >= SHARED_PREFIX_MIN
    system, a, b = list(range(100, 140)), list(range(1, 60)), list(range(60, 120))
    tasks = [system + a + [1], system + a + [2], system + b + [3], system + b + [4]]
    assert shared_prefix_rows(tasks) == [(99, [0, 1]), (100, [2, 3])]  # a row per task, not one on the system prompt
