"""The episode module: one env episode played (oracle, any policy, a replay) into a two-view conversation."""

import gymnasium
import pytest

from pbsd_agents.episode import Episode, play, play_oracle
from tests.support import TOY_ENV_ID, AdderEnv


def test_oracle_episode_builds_both_views():
    ep = play_oracle(AdderEnv(), options={"index": 3})
    conv = ep.conversation
    assert ep.done and ep.success and ep.reward == 1.0 and not ep.truncated and ep.turns == 3
    assert [m["role"] for m in conv.student_messages] == ["system", "user", "assistant", "tool", "assistant", "tool", "assistant"]
    # the views differ in the prompt only: the teacher's first user turn carries the privileged text
    assert conv.student_messages[2:] == conv.teacher_messages[2:]
    assert ep.privileged in conv.teacher_messages[1]["content"] and not ep.privileged_in_student_view()
    assert conv.assistant_turns() == AdderEnv().unwrapped.make_task(3).oracle
    assert conv.tool_format == "hermes" and [t["function"]["name"] for t in conv.tools] == ["add"]


def test_play_with_a_policy_function_and_a_turn_limit():
    seen = []

    def policy(ep):  # a policy reads the conversation so far and answers one turn
        seen.append(len(ep.conversation.student_messages))
        return "I give up: 0."

    ep = play(gymnasium.make(TOY_ENV_ID), policy, options={"index": 0})
    assert seen == [2] and ep.done and not ep.success and ep.turns == 1  # a turn without a call ends it
    calls = play(AdderEnv(), lambda ep: AdderEnv().make_task(0).oracle[0], options={"index": 0}, max_turns=2)
    assert calls.turns == 2 and calls.truncated and calls.reward == 0.0  # cut by the limit, not by the env


def test_step_keeps_the_env_result_and_observe_is_separate():
    ep = Episode(AdderEnv(), options={"index": 1})
    obs = ep.step(ep.env.oracle_actions()[0])
    assert obs and obs[0]["role"] == "tool" and ep.last_step[0] == obs
    assert ep.conversation.student_messages[-1]["role"] == "assistant"  # not yet observed
    ep.observe(obs)
    assert ep.conversation.student_messages[-1] == obs[-1] == ep.conversation.teacher_messages[-1]
    ep.cut(unfinished_turn=True)
    assert ep.done and ep.truncated and ep.turns == 2
    with pytest.raises(RuntimeError, match="over"):
        ep.step("more")


def test_task_info_is_the_envs_own_reset_info():
    ep = Episode(gymnasium.make("pbsd/ToolCall-v0"), options={"index": 0})
    assert set(ep.task_info) == {"variant"} and ep.info["tool_format"] == "hermes"


def test_a_leaking_env_is_detected():
    class Leaky(AdderEnv):
        def make_task(self, index):
            task = super().make_task(index)
            task.messages[1]["content"] += " " + task.privileged
            return task

    assert Episode(Leaky(), options={"index": 0}).privileged_in_student_view()


def test_a_terminal_tool_ends_the_episode_after_it_runs():
    class Handoff(AdderEnv):
        terminal_tools = frozenset({"add"})  # here: the first add hands the conversation over

        def score(self, transcript):
            return float(transcript.messages[-1] == {"role": "tool", "name": "add", "content": "result = 13"}), {}

    env = Handoff()
    env.reset(options={"index": 0})
    turn = "\n".join(AdderEnv().make_task(0).oracle[:2])  # two calls in one turn: the second never runs
    obs, reward, terminated, truncated, info = env.step(turn)
    assert obs == [] and terminated and not truncated and reward == 1.0 and info["success"]
    assert [m["role"] for m in env.messages] == ["system", "user", "assistant", "tool"]
    ep = play_oracle(Handoff(), options={"index": 0})
    assert ep.done and ep.turns == 1 and ep.reward == 1.0
