"""Environment throughput under the oracle policy: steps/s and episodes/s per ``pbsd/`` env.

Each episode resets the env (a seeded reset, so runs compare) and steps the oracle's turns
(``env.unwrapped.oracle_actions()``) to the end. ``steps/s`` counts the time inside ``step()`` only
(parsing, tool calls, scoring); ``episodes/s`` counts the whole episode, reset included. Loader envs
(BFCL, GSM8K, tau-bench retail) run when their files are under ``--data-dir``. Prints a Markdown table.

    python scripts/bench_envs.py                       # every env, 200 episodes each
    python scripts/bench_envs.py --episodes 50 --env pbsd/Retail-v0 --env pbsd/ToolCall-v0
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import gymnasium as gym

from pbsd_agents.testing import registered_env_ids

ROOT = Path(__file__).resolve().parents[1]
LOADER_KWARGS = {  # env id -> (constructor arguments, given the data folder)
    "pbsd/BFCL-v0": lambda d: {"data_path": str(d / "bfcl" / "BFCL_v3_simple.json")},
    "pbsd/GSM8K-v0": lambda d: {"data_path": str(d / "gsm8k" / "train.jsonl")},
    "pbsd/TauRetail-v0": lambda d: {"data_dir": str(d / "tau_bench" / "retail")},
}


def bench(env: gym.Env, episodes: int, seed: int = 0) -> dict:
    """Run ``episodes`` oracle episodes on ``env``; return counts, times and the oracle's success rate."""
    steps = successes = 0
    step_s = 0.0
    t0 = time.perf_counter()
    for i in range(episodes):
        env.reset(seed=seed + i)
        for action in env.unwrapped.oracle_actions():
            t = time.perf_counter()
            _, _, terminated, truncated, info = env.step(action)
            step_s += time.perf_counter() - t
            steps += 1
            if terminated or truncated:
                successes += bool(info.get("success"))
                break
    total_s = time.perf_counter() - t0
    return {"episodes": episodes, "steps": steps, "step_s": step_s, "total_s": total_s, "success": successes / max(episodes, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Episodes replay the oracle; steps/s times step() only, "
        "episodes/s includes reset.",
    )
    parser.add_argument("--episodes", type=int, default=200, help="oracle episodes per env (default: 200)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder with bfcl/, gsm8k/, tau_bench/; loader envs whose files are missing are skipped "
                        "(default: ../shared/data from the repository root)")
    parser.add_argument("--env", action="append", default=None, metavar="ID",
                        help="benchmark only this env id (repeatable); default: every registered pbsd/ env")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first reset; episode i uses seed + i (default: 0)")
    args = parser.parse_args(argv)

    env_ids = args.env or registered_env_ids()
    rows, skipped = [], []
    for env_id in env_ids:
        kwargs = LOADER_KWARGS[env_id](args.data_dir) if env_id in LOADER_KWARGS else {}
        missing = [p for p in kwargs.values() if not Path(p).exists()]
        if missing:
            skipped.append(f"{env_id}: no data at {missing[0]}")
            continue
        try:
            t = time.perf_counter()
            env = gym.make(env_id, **kwargs)
            build_s = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001  (report and go on with the other envs)
            skipped.append(f"{env_id}: could not build ({type(exc).__name__}: {exc})")
            continue
        r = bench(env, args.episodes, args.seed)
        env.close()
        rows.append((env_id, r, build_s))

    print(f"Oracle-policy throughput, {args.episodes} episodes per env, Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| env | episodes | steps | steps/s | episodes/s | oracle success | build s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for env_id, r, build_s in rows:
        print(f"| {env_id} | {r['episodes']} | {r['steps']} | {r['steps'] / max(r['step_s'], 1e-9):,.0f} | "
              f"{r['episodes'] / max(r['total_s'], 1e-9):,.0f} | {r['success']:.2f} | {build_s:.2f} |")
    for line in skipped:
        print(f"\nskipped {line}")


if __name__ == "__main__":
    main()
