"""Write your own environment: subclass ChatToolEnv, register it with gymnasium, check it with the kit.

The task: find the shelf a book stands on. The student has two tools (look a title up in the
catalog, then ask for the shelf of a book id) and must end with the shelf code. The teacher also
sees the privileged context: the plan and the answer.

Run it (it prints the kit's fuzz counts):

    python scripts/custom_env_example.py
"""

from __future__ import annotations

import random

import gymnasium as gym

from pbsd_agents.envs import ChatToolEnv, Task, Transcript
from pbsd_agents.testing import check_env
from pbsd_agents.tools import Tool, format_tool_call

ENV_ID = "my/Library-v0"
TITLES = ["Dune", "Emma", "Ulysses", "Beloved", "Middlemarch", "Solaris", "Kindred", "Walden", "Rebecca", "Persuasion"]


class LibraryEnv(ChatToolEnv):
    """Find a book's shelf: ``search_catalog(title)`` gives its id, ``get_shelf(book_id)`` its shelf."""

    num_tasks = 100  # a finite split: options={"index": i} picks task i

    def make_task(self, index: int) -> Task:
        # Seeded by split and index: the same index always builds the same task, and splits differ.
        rng = random.Random(f"{self.split}/{index}")
        ids = {title: f"B{rng.randrange(100, 1000)}" for title in TITLES}
        shelves = {book_id: f"{rng.choice('ABCDEF')}-{rng.randrange(1, 20)}" for book_id in ids.values()}
        title = rng.choice(TITLES)
        book_id, shelf = ids[title], shelves[ids[title]]

        def search_catalog(title: str) -> str:
            return f"book_id = {ids[title]}" if title in ids else f"no book titled {title!r}"

        def get_shelf(book_id: str) -> str:
            return f"shelf = {shelves[book_id]}" if book_id in shelves else f"unknown book id {book_id!r}"

        tools = [
            Tool("search_catalog", "Find a book's id by its exact title.",
                 {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}, search_catalog),
            Tool("get_shelf", "Find the shelf of a book id.",
                 {"type": "object", "properties": {"book_id": {"type": "string"}}, "required": ["book_id"]}, get_shelf),
        ]
        return Task(
            task_id=f"library-{self.split}-{index}",
            messages=[
                {"role": "system", "content": "You are a librarian. Use the tools, then give the shelf code."},
                {"role": "user", "content": f"On which shelf is '{title}'?"},
            ],
            privileged=f"Plan: search_catalog('{title}') gives {book_id}; get_shelf('{book_id}') gives {shelf}. Answer: {shelf}.",
            oracle=[
                format_tool_call("search_catalog", {"title": title}, self.tool_format),
                format_tool_call("get_shelf", {"book_id": book_id}, self.tool_format),
                f"'{title}' is on shelf {shelf}.",
            ],
            tools=tools,
            gold=shelf,  # what score() compares with; the model never sees it
        )

    def score(self, transcript: Transcript) -> tuple[float, dict]:
        # The final turn must name the shelf; "A-1" must not count inside "A-12".
        words = transcript.final_text.replace(".", " ").replace(",", " ").split()
        return float(self.task.gold in words), {"answer": self.task.gold}


if ENV_ID not in gym.registry:  # importing this file twice must not re-register (gymnasium would warn)
    gym.register(id=ENV_ID, entry_point=LibraryEnv)


def main() -> None:
    env = gym.make(ENV_ID, max_turns=6)
    report = check_env(env, num_fuzz=1000)
    print(report)
    print(f"fuzz steps: {report.fuzz_steps}, episodes: {report.fuzz_episodes}, by kind: {report.fuzz_by_kind}, "
          f"oracle episodes solved: {report.oracle_episodes}, problems: {report.num_errors}")


if __name__ == "__main__":
    main()
