"""PBSD's push-down variants (``push_down``, ``group_size``) against plain-torch computations on a logit table.

The 'model' is a table of free logits, one row per trajectory (the first prompt id names the row), so
the gradient of the loss with respect to the logits at every position is read off directly. The
expected losses are computed here from the table with ``log_softmax`` and the trajectories' own token
lists, without the kit's scoring or view code; the gradients are compared with autograd on a copy.
"""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from pbsd_agents.algorithms import PBSD, Batch, PBSDConfig, TaskGroup
from pbsd_agents.cli import main as cli_main
from pbsd_agents.models import Policy
from pbsd_agents.trajectory import Segment, Trajectory

VOCAB, LENGTH, BETA = 13, 48, 0.3


class LogitTable(torch.nn.Module):
    """Logits as parameters indexed by (row, position); row = the view's first input id."""

    def __init__(self, rows: int, seed: int):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(rows, LENGTH, VOCAB, generator=torch.Generator().manual_seed(seed)))

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids[:, 0], : input_ids.shape[1]])


def trajectory(row: int, source: str, gen: torch.Generator, reward: float) -> Trajectory:
    """Random actions and observations after student and teacher prompts of different lengths."""
    def ids(lo, hi):
        return torch.randint(1, VOCAB, (int(torch.randint(lo, hi, (1,), generator=gen)),), generator=gen).tolist()

    segments = []
    for k in range(int(torch.randint(1, 4, (1,), generator=gen))):
        if k:
            segments.append(Segment("observation", ids(1, 4)))
        action = ids(1, 6)
        segments.append(Segment("action", action, [-1.0] * len(action)))
    return Trajectory("e", f"t{row}", source, "p", [row] + ids(1, 4), [row] + ids(3, 7), segments,
                      reward=reward, success=reward == 1.0)


def tokens(t: Trajectory, prompt: list[int]) -> tuple[list[int], list[bool]]:
    """The sequence a view scores and which of its tokens are actions (built here, not by the kit)."""
    seq, is_action = list(prompt), [False] * len(prompt)
    for seg in t.segments:
        seq += seg.ids
        is_action += [seg.kind == "action"] * len(seg.ids)
    return seq, is_action


def logprob(table: torch.Tensor, t: Trajectory, prompt: list[int]) -> torch.Tensor:
    """Σ over action tokens of log softmax(table[row, position − 1])[token]."""
    seq, is_action = tokens(t, prompt)
    lp = F.log_softmax(table[prompt[0]], dim=-1)
    return torch.stack([lp[i - 1, seq[i]] for i in range(1, len(seq)) if is_action[i]]).sum()


def batch_of(seed: int, rewards: list[list[float]], per_teacher: int, teachers: int = 1):
    """Tasks with ``teachers`` y+ each and ``per_teacher`` y- per y+; ``rewards[task]`` are the y- rewards."""
    gen = torch.Generator().manual_seed(seed)
    groups, row = [], 0
    for i, task_rewards in enumerate(rewards):
        assert len(task_rewards) == teachers * per_teacher
        g = TaskGroup(i)
        for _ in range(teachers):
            g.teacher.append(trajectory(row, "teacher", gen, reward=1.0))
            row += 1
        for r in task_rewards:
            g.student.append(trajectory(row, "student", gen, reward=r))
            row += 1
        groups.append(g)
    student = LogitTable(row, seed)
    policy = Policy(student, tokenizer=None)
    with torch.no_grad():
        policy._teacher_copy.table.copy_(torch.randn(row, LENGTH, VOCAB, generator=gen))
    return Batch(groups), policy, student


def independent_pairs(batch: Batch, policy: Policy, per_teacher: int):
    """Per pair (y+, y-): h(y+), h(y-), log π_θ(y-), y-'s reward and its y+'s group id, on a leaf copy of the table."""
    s_tab = policy.model.table.detach().clone().requires_grad_(True)
    t_tab = policy._teacher_copy.table.detach()
    cols = {k: [] for k in ("h_pos", "h_neg", "logp_neg", "reward", "group")}
    for g in batch.groups:
        for i, pos in enumerate(g.teacher):
            for neg in g.student[i * per_teacher:(i + 1) * per_teacher]:
                for side, t in (("pos", pos), ("neg", neg)):
                    lp = logprob(s_tab, t, t.student_prompt_ids)
                    cols[f"h_{side}"].append(lp - logprob(t_tab, t, t.teacher_prompt_ids))
                cols["logp_neg"].append(logprob(s_tab, neg, neg.student_prompt_ids))
                cols["reward"].append(neg.reward)
                cols["group"].append(id(pos))
    out = {k: torch.stack(v) for k, v in cols.items() if k in ("h_pos", "h_neg", "logp_neg")}
    out["reward"] = torch.tensor(cols["reward"])
    out["group"] = cols["group"]
    return s_tab, out


def assert_gradient_only_on_actions(batch: Batch, grad: torch.Tensor) -> None:
    """Zero at every position that does not predict an action token (prompt, observation, padding)."""
    for t in batch.trajectories:
        seq, is_action = tokens(t, t.student_prompt_ids)
        predicts_action = {i - 1 for i in range(1, len(seq)) if is_action[i]}
        for p in range(LENGTH):
            if p not in predicts_action:
                assert torch.all(grad[t.student_prompt_ids[0], p] == 0), f"gradient leaked to position {p}"


def loss_and_grad(config: PBSDConfig, batch: Batch, policy: Policy, student: LogitTable):
    student.table.grad = None
    loss, metrics = PBSD(config).loss(batch, policy)
    loss.backward()
    return loss.detach(), student.table.grad.clone(), metrics


@pytest.mark.parametrize("seed", range(3))
def test_default_push_down_is_the_papers_pair_loss(seed):
    batch, policy, student = batch_of(seed, [[0.0], [1.0], [0.0]], per_teacher=1)
    loss, grad, metrics = loss_and_grad(PBSDConfig(beta=BETA), batch, policy, student)
    same_loss, same_grad, _ = loss_and_grad(PBSDConfig(beta=BETA, push_down="all", group_size=1), batch, policy, student)
    assert torch.equal(loss, same_loss) and torch.equal(grad, same_grad)

    s_tab, c = independent_pairs(batch, policy, 1)
    expected = -F.logsigmoid(BETA * (c["h_pos"] - c["h_neg"])).mean()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, s_tab.grad, rtol=1e-4, atol=1e-6)
    assert "negatives_kept" not in metrics  # the paper's metrics, as before


@pytest.mark.parametrize("seed", range(3))
def test_failed_push_down_weights_each_negative_by_one_minus_its_reward(seed):
    rewards = [[0.0, 1.0], [0.25, 0.0], [1.0, 0.5]]
    batch, policy, student = batch_of(seed, rewards, per_teacher=2)
    loss, grad, metrics = loss_and_grad(PBSDConfig(beta=BETA, push_down="failed", group_size=2), batch, policy, student)

    s_tab, c = independent_pairs(batch, policy, 2)
    expected = -F.logsigmoid(BETA * (c["h_pos"] - (1 - c["reward"]) * c["h_neg"])).mean()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, s_tab.grad, rtol=1e-4, atol=1e-6)
    assert_gradient_only_on_actions(batch, grad)
    for g in batch.groups:  # a successful student sample is not pushed down at all; a failed one is
        for t in g.student:
            assert (grad[t.student_prompt_ids[0]].abs().sum() == 0) == (t.reward == 1.0)
    assert metrics["negatives_kept"] == 4 and metrics["neg_weight"] == pytest.approx(sum(1 - r for rs in rewards for r in rs) / 6)
    assert metrics["num_pairs"] == 6


@pytest.mark.parametrize("seed", range(3))
def test_group_baseline_adds_the_centred_score_function_term(seed):
    rewards = [[0.0, 1.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]]
    batch, policy, student = batch_of(seed, rewards, per_teacher=3, teachers=2)  # 4 groups of 3
    config = PBSDConfig(beta=BETA, push_down="group_baseline", group_size=3, pairs_per_task=2)
    assert PBSD(config).plan().student_samples == 6 and PBSD(config).plan().teacher_samples == 2
    loss, grad, metrics = loss_and_grad(config, batch, policy, student)

    s_tab, c = independent_pairs(batch, policy, 3)
    ell = -F.logsigmoid(BETA * (c["h_pos"] - c["h_neg"]))
    advantage = torch.zeros(len(ell))
    for p, gid in enumerate(c["group"]):  # ℓ minus the mean ℓ of the pairs that share this y+
        members = [q for q, other in enumerate(c["group"]) if other == gid]
        advantage[p] = ell[p].detach() - ell.detach()[members].mean()
    assert len(set(c["group"])) == 4 and advantage.abs().sum() > 0
    ell.mean().backward(retain_graph=True)  # the value is the paper's mean pair loss ...
    (advantage * c["logp_neg"]).mean().backward()  # ... the gradient gains Σ A_p ∇log π_θ(y-_p) / P
    assert loss.item() == pytest.approx(ell.mean().item(), rel=1e-5)
    torch.testing.assert_close(grad, s_tab.grad, rtol=1e-4, atol=1e-6)
    assert_gradient_only_on_actions(batch, grad)

    _, paper_grad, _ = loss_and_grad(PBSDConfig(beta=BETA, group_size=3, pairs_per_task=2), batch, policy, student)
    assert not torch.allclose(grad, paper_grad)  # the score term changes the update
    h = c["h_neg"].detach().reshape(4, 3)
    assert metrics["negatives_kept"] == 12
    assert metrics["h_neg_group_std"] == pytest.approx(h.std(dim=1, unbiased=False).mean().item(), rel=1e-4)
    assert metrics["neg_advantage_abs"] == pytest.approx(advantage.abs().mean().item(), rel=1e-4)


def test_several_negatives_with_the_papers_push_down_average_the_pairs():
    batch, policy, student = batch_of(7, [[0.0, 0.0, 1.0, 0.0]], per_teacher=4)
    loss, grad, _ = loss_and_grad(PBSDConfig(beta=BETA, group_size=4), batch, policy, student)
    s_tab, c = independent_pairs(batch, policy, 4)
    expected = -F.logsigmoid(BETA * (c["h_pos"] - c["h_neg"])).mean()
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    torch.testing.assert_close(grad, s_tab.grad, rtol=1e-4, atol=1e-6)


def test_variant_options_are_checked():
    with pytest.raises(ValueError, match="all, failed, group_baseline"):
        PBSDConfig(push_down="student")
    with pytest.raises(ValueError, match="group_size >= 2"):
        PBSDConfig(push_down="group_baseline")
    with pytest.raises(ValueError, match="pair_filter=none"):
        PBSDConfig(push_down="failed", pair_filter="verifier")
    with pytest.raises(ValueError, match="group_size"):
        PBSDConfig(group_size=0)


def _train(tiny_model, out, *algo_args):
    argv = ["train", "--model", tiny_model, "--env", "pbsd/MathCalc-v0", "--algo", "pbsd", "--steps", "2",
            "--tasks-per-step", "2", "--eval-tasks", "1", "--pass-k", "1", "--max-new-tokens", "8", "--max-tokens", "16",
            "--save-every", "0", "--keep-last", "1", "--out", str(out), "--no-progress"]
    for a in algo_args:
        argv += ["--algo-arg", a]
    return cli_main(argv)


@pytest.mark.parametrize("algo_args,kept", [(("push_down=failed",), "negatives_kept"),
                                            (("push_down=group_baseline", "group_size=2"), "h_neg_group_std")])
def test_two_step_train_through_the_cli(tiny_model, tmp_path, algo_args, kept):
    import json

    assert _train(tiny_model, tmp_path / "run", *algo_args) == 0
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    pairs_per_step = 2 * (2 if "group_size=2" in algo_args else 1)
    assert all(kept in m and m["num_pairs"] <= pairs_per_step for m in metrics if not m["skipped"])
    assert metrics[-1]["trajectories"] == 2 * 2 * (1 + pairs_per_step // 2)  # y+ and its y- per task, per step


def test_a_bad_push_down_is_one_line_naming_the_choices(tiny_model, tmp_path, capsys):
    assert _train(tiny_model, tmp_path / "run", "push_down=sometimes") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "push_down must be one of all, failed, group_baseline" in err
