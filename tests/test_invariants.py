"""The trajectory invariants (mask, privileged text, alignment, re-rendering) and the drift report."""

import copy
import json

import pytest

from tests.support import (
    TOY_ENV_ID, AdderEnv, ScriptedEngine, byte_tok, oracle_script, qwen_tokenizer, renderer_for, tiny_model,
)

from pbsd_agents.engines import HFEngine
from pbsd_agents.invariants import (
    check_jsonl, check_trajectory, compare_render, replay_conversation, template_drift,
)
from pbsd_agents.models import Policy
from pbsd_agents.rollout import Collector
from pbsd_agents.trajectory import Segment, save_jsonl

TOKENIZERS = ["byte", "qwen"]


def collect(name, indices=range(3), script=None, view="student", **kw):
    r = renderer_for(name)
    engine = ScriptedEngine(r, script or oracle_script(AdderEnv, indices))
    return Collector(engine, r, progress=False).collect_with_conversations(TOY_ENV_ID, list(indices), view=view, **kw)


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("view", ["student", "teacher"])
def test_mask_covers_exactly_the_sampled_ids(name, view):
    for t, _ in collect(name, view=view):
        for which in ("student", "teacher"):
            ids, mask = t.view(which)
            prompt = len(t.student_prompt_ids if which == "student" else t.teacher_prompt_ids)
            assert mask[:prompt] == [0] * prompt
            pos = prompt
            for seg in t.segments:
                assert mask[pos: pos + len(seg.ids)] == [int(seg.kind == "action")] * len(seg.ids)
                assert ids[pos: pos + len(seg.ids)] == seg.ids
                pos += len(seg.ids)
            assert sum(mask) == t.num_action_tokens == len(t.action_logprobs)


@pytest.mark.parametrize("name", TOKENIZERS)
def test_views_share_segments_so_actions_align(name):
    for t, _ in collect(name):
        s_ids, s_mask = t.student_view()
        t_ids, t_mask = t.teacher_view()
        ns, nt = len(t.student_prompt_ids), len(t.teacher_prompt_ids)
        assert nt > ns  # the privileged context is in the teacher prompt only
        assert s_ids[ns:] == t_ids[nt:] and s_mask[ns:] == t_mask[nt:]
        assert [i - ns for i, m in enumerate(s_mask) if m] == [i - nt for i, m in enumerate(t_mask) if m]


@pytest.mark.parametrize("name", TOKENIZERS)
def test_privileged_text_never_in_student_prompt_or_observations(name):
    r = renderer_for(name)
    # the student says the privileged text itself: allowed (it is an action, not an observation)
    def script(text, turn):
        plan = next(line for line in ["SECRET-PLAN-0: add 3 and 10, then add 100; the total is 113"])
        return [plan, "The total is 113."][min(turn, 1)]

    pairs = collect(name, [0], script=script)
    t, conv = pairs[0]
    assert t.privileged in t.segments[0].text
    assert check_trajectory(t, r, conversation=conv) == []
    for tr, _ in collect(name):
        plain = r.decode(tr.student_prompt_ids) + "".join(s.text for s in tr.segments if s.kind == "observation")
        assert tr.privileged not in plain
        assert check_trajectory(tr, r) == []


@pytest.mark.parametrize("name", TOKENIZERS)
def test_privileged_leaks_are_detected(name):
    r = renderer_for(name)
    t, _ = collect(name, [0])[0]
    leaked = copy.deepcopy(t)
    obs = leaked.segments[1]
    obs.ids = obs.ids[:3] + r.encode(" " + t.privileged) + obs.ids[3:]
    assert [v.check for v in check_trajectory(leaked, r)] == ["privileged"]
    # a token run alone (text hidden by a different decode) is caught too
    leaked = copy.deepcopy(t)
    leaked.student_prompt_ids = leaked.student_prompt_ids + r.encode(t.privileged)
    assert "privileged" in [v.check for v in check_trajectory(leaked, r)]


def test_mask_and_stop_violations_are_reported():
    r = renderer_for("byte")
    t, _ = collect("byte", [0])[0]
    bad = copy.deepcopy(t)
    bad.segments[0].logprobs = bad.segments[0].logprobs[:-1] + [float("nan")]
    assert "non-finite" in str(check_trajectory(bad, r)[0])
    bad = copy.deepcopy(t)
    bad.segments[-1] = Segment("action", bad.segments[-1].ids[:-1], bad.segments[-1].logprobs[:-1], "x")
    assert "does not end with a stop token" in str(check_trajectory(bad, r)[0])
    bad.truncated = True  # an unfinished last turn is fine in a truncated trajectory
    assert check_trajectory(bad, r) == []
    bad = copy.deepcopy(t)
    bad.segments.insert(1, Segment("observation", [1, 2]))
    assert any("must follow an action" in str(v) for v in check_trajectory(bad, r))


@pytest.mark.parametrize("name", TOKENIZERS)
def test_rerendering_gives_the_trajectory_ids(name):
    for view in ("student", "teacher"):
        for t, conv in collect(name, view=view):
            cmp = compare_render(t, conv, renderer_for(name))
            assert cmp.violations == [] and cmp.action_retokenized == 0
            assert cmp.exact == {"student": True, "teacher": True}
            assert cmp.template_exact == {"student": True, "teacher": True}


def test_sampled_non_canonical_ids_are_drift_not_a_violation():
    r = renderer_for("qwen")
    oracle = oracle_script(AdderEnv, [0])

    def script(text, turn):
        action = oracle(text, turn)
        if turn == 2:  # "The total is 113." spelled one character per token: valid text, non-canonical ids
            return [i for ch in action for i in r.encode(ch)] + [r.eot_id]
        return action

    t, conv = collect("qwen", [0], script=script)[0]
    cmp = compare_render(t, conv, r)
    assert cmp.violations == [] and cmp.action_retokenized == 1
    assert cmp.exact == {"student": False, "teacher": False} and all(cmp.template_exact.values())
    assert t.success  # the environment read the same text


@pytest.mark.parametrize("name", TOKENIZERS)
def test_template_drift_is_none_on_real_env_conversations(name):
    convs = [conv for _, conv in collect(name, range(3))]
    import gymnasium

    for env_id in ("pbsd/ToolCall-v0", "pbsd/MathCalc-v0"):
        env = gymnasium.make(env_id)
        for i in range(3):
            obs, info = env.reset(options={"index": i})
            msgs = list(obs)
            for action in env.unwrapped.oracle_actions():
                new, _, term, trunc, _ = env.step(action)
                msgs += [{"role": "assistant", "content": action}] + list(new)
            convs.append({"messages": msgs, "tools": info["tools"]})
    report = template_drift(renderer_for(name).tokenizer, convs)
    assert report.ok, report.summary()
    assert report.conversations == 3 * 2 + 6


def test_template_drift_reports_a_merging_template():
    tok = copy.deepcopy(qwen_tokenizer())
    tok.chat_template = (
        "{%- for m in messages -%}{%- if m.role == 'tool' -%}{{ '\\n' }}{%- endif -%}"
        "{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "call"},
            {"role": "tool", "content": "result = 1"}, {"role": "assistant", "content": "1"}]
    with pytest.warns(UserWarning, match="token-level prefix"):
        report = template_drift(tok, [conv])
    assert not report.ok and report.mismatches[0]["index"] == 0
    assert "0/1 conversations" in report.summary()


def test_check_jsonl_replays_the_file(tmp_path):
    r = renderer_for("qwen")
    pairs = collect("qwen", range(4))
    path = tmp_path / "t.jsonl"
    save_jsonl([t for t, _ in pairs], path)
    report = check_jsonl(path, r)
    assert report.ok, report.summary()
    assert report.trajectories == report.render_checked == report.exact == 4
    # the replayed conversation is the collector's
    t, conv = pairs[0]
    assert replay_conversation(t, r.stop_ids) == conv


def test_check_jsonl_reports_broken_records(tmp_path):
    pairs = collect("byte", range(2))
    path = tmp_path / "t.jsonl"
    save_jsonl([t for t, _ in pairs], path)
    lines = path.read_text().splitlines()
    rec = json.loads(lines[1])
    rec["student_action_mask"][0] = 1  # a prompt token marked as an action
    path.write_text(lines[0] + "\n" + json.dumps(rec) + "\n" + "{not json\n")
    report = check_jsonl(path, byte_tok(), replay=False)
    assert not report.ok and [n for n, _ in report.violations] == [2, 3]
    assert all(v.check == "record" for _, v in report.violations)


def test_check_jsonl_on_sampled_trajectories(tmp_path):
    r = renderer_for("byte")
    collector = Collector(HFEngine(Policy(tiny_model("byte"), byte_tok(), frozen_teacher=False), stop_ids=r.stop_ids),
                          r, progress=False)
    trajs = collector.collect(TOY_ENV_ID, range(4), max_new_tokens=10, seed=0)
    path = tmp_path / "s.jsonl"
    save_jsonl(trajs, path)
    report = check_jsonl(path, r)
    assert report.ok, report.summary()
    assert report.render_checked == 4
