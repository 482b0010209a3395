"""Per-turn privileged context: episodes, the collector's two views, the trajectory format, the
invariants and check_env, on a toy env whose second user turn brings its own privileged text."""

import json

import gymnasium
import pytest

from pbsd_agents.episode import play_oracle
from pbsd_agents.invariants import check_jsonl, check_trajectory
from pbsd_agents.rollout import Collector
from pbsd_agents.testing import check_env
from pbsd_agents.trajectory import Segment, Trajectory, load_jsonl, save_jsonl
from tests.support import RELAY_ENV_ID, TOY_ENV_ID, RelayEnv, ScriptedEngine, oracle_script, renderer_for

TOKENIZERS = ["byte", "qwen"]


def collect(name, view, indices=range(3), env_kwargs=None):
    r = renderer_for(name)
    engine = ScriptedEngine(r, oracle_script(RELAY_ENV_ID, indices, env_kwargs=env_kwargs))
    return Collector(engine, r, progress=False).collect_with_conversations(RELAY_ENV_ID, list(indices), view=view,
                                                                        env_kwargs=env_kwargs), r


def test_episode_gives_the_teacher_each_turn_note_when_the_turn_starts():
    ep = play_oracle(gymnasium.make(RELAY_ENV_ID), options={"index": 1})
    assert ep.success and len(ep.turn_privileged) == 1 and ep.turn_privileged[0].startswith("TURN-2-PLAN")
    conv = ep.conversation
    users = [(s["content"], t["content"]) for s, t in zip(conv.student_messages, conv.teacher_messages) if s["role"] == "user"]
    assert len(users) == 2
    assert ep.privileged in users[0][1] and ep.privileged not in users[0][0]
    assert ep.turn_privileged[0] in users[1][1] and ep.turn_privileged[0] not in users[1][0]
    assert ep.turn_privileged[0] not in users[0][1]  # the teacher learns turn 2's calls only at turn 2
    others = [(s, t) for s, t in zip(conv.student_messages, conv.teacher_messages) if s["role"] != "user"]
    assert all(s == t for s, t in others)  # assistant turns and tool results: the same in both views
    assert ep.outcome == {"turn_passed": [True, True]}


@pytest.mark.parametrize("name", TOKENIZERS)
@pytest.mark.parametrize("view", ["student", "teacher"])
def test_collected_views_differ_only_in_the_notes(name, view):
    pairs, r = collect(name, view)
    for traj, conv in pairs:
        assert traj.success and traj.source == view and len(traj.turn_privileged) == 1
        copies = [s for s in traj.segments if s.teacher_ids is not None]
        assert len(copies) == 1 and copies[0].kind == "observation"
        note = traj.turn_privileged[0]
        assert note in r.decode(copies[0].teacher_ids) and note not in r.decode(copies[0].ids)
        student, _ = traj.student_view()
        teacher, t_mask = traj.teacher_view()
        assert note not in r.decode(student) and note in r.decode(teacher)
        # action positions align: the same action ids in the same order in both views
        t_actions = [i for i, m in zip(teacher, t_mask) if m]
        assert t_actions == traj.action_ids
        assert check_trajectory(traj, r, conversation=conv) == []
        assert traj.outcome == {"turn_passed": [True, True]}


def test_json_lines_version_2_round_trip_and_replay(tmp_path):
    pairs, r = collect("byte", "student")
    path = tmp_path / "relay.jsonl"
    save_jsonl([t for t, _ in pairs], path)
    first = json.loads(path.read_text().splitlines()[0])
    assert first["version"] == 2 and first["turn_privileged"] and first["outcome"]
    assert [t for t in load_jsonl(path)] == [t for t, _ in pairs]
    report = check_jsonl(path, r)
    assert report.ok and report.render_checked == 3, report.summary()


def test_single_context_trajectories_keep_version_1(tmp_path):
    r = renderer_for("byte")
    collector = Collector(ScriptedEngine(r, oracle_script(TOY_ENV_ID, [0])), r, progress=False)
    (traj,) = collector.collect(TOY_ENV_ID, [0])
    record = traj.to_dict()
    assert record["version"] == 1 and "turn_privileged" not in record
    assert all("teacher_ids" not in s for s in record["segments"])


def test_leaks_and_broken_copies_are_reported():
    pairs, r = collect("byte", "student")
    traj, _ = pairs[0]
    note = traj.turn_privileged[0]
    seg = next(s for s in traj.segments if s.teacher_ids is not None)
    leaked = Trajectory(**{**vars(traj), "segments": [
        Segment(s.kind, s.teacher_ids, s.logprobs, s.text) if s is seg else s for s in traj.segments]})
    assert any(v.check == "privileged" and "later turn" in v.message for v in check_trajectory(leaked, r))
    no_note = Trajectory(**{**vars(traj), "turn_privileged": []})
    assert any(v.check == "alignment" for v in check_trajectory(no_note, r))
    same = Trajectory(**{**vars(traj), "segments": [
        Segment(s.kind, s.ids, s.logprobs, s.text, teacher_ids=list(s.ids)) if s is seg else s for s in traj.segments]})
    problems = [str(v) for v in check_trajectory(same, r)]
    assert any("equal to the student's" in p for p in problems) and any("lacks its turn's privileged" in p for p in problems)
    assert note  # (the note itself is a non-empty string)
    with pytest.raises(ValueError, match="only an observation segment may have teacher_ids"):
        Segment("action", [1], [-0.1], "x", teacher_ids=[2])


def test_a_note_shown_to_the_student_is_refused():
    env = RelayEnv(leak=True)
    with pytest.raises(ValueError, match="privileged text of turn 2 shows in the student's messages"):
        play_oracle(env, options={"index": 0})


def test_check_env_handles_per_turn_notes():
    report = check_env(RelayEnv(), num_fuzz=300)
    assert report.oracle_episodes == 3
    report = check_env(RelayEnv(leak=True), num_fuzz=50, raise_on_error=False)
    assert any("appears in the observation" in e for e in report.errors), report.errors[:3]
