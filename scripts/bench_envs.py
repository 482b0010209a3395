"""Environment throughput under the oracle policy: steps/s and episodes/s per registered env.

Each episode resets the env (a seeded reset, so runs compare) and plays the oracle's turns
(``env.unwrapped.oracle_actions()``) to the end with :func:`pbsd_agents.episode.play_oracle`.
``steps/s`` counts the time inside ``step()`` only (parsing, tool calls, scoring); ``episodes/s``
counts the whole episode, reset included. Loader envs (BFCL, GSM8K, tau-bench retail) run when
their files are under ``--data-dir``. Prints a Markdown table.

    python scripts/bench_envs.py                       # every env, 200 episodes each
    python scripts/bench_envs.py --episodes 50 --env pbsd/Retail-v0 --env pbsd/ToolCall-v0
"""

from __future__ import annotations

import argparse
import platform
import time

# Run as a file, this script's folder is on sys.path: the `bench` package beside it times the episodes.
from bench.envs import loader_kwargs, time_oracle


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " Episodes replay the oracle; steps/s times step() only, "
        "episodes/s includes reset.",
    )
    parser.add_argument("--episodes", type=int, default=200, help="oracle episodes per env (default: 200)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with bfcl/, gsm8k/, tau_bench/; without it, or when their files are missing, "
                        "loader envs are skipped")
    parser.add_argument("--env", action="append", default=None, metavar="ID",
                        help="benchmark only this env id (repeatable); default: every registered env")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first reset; episode i uses seed + i (default: 0)")
    args = parser.parse_args(argv)

    from pbsd_agents.envs.registry import make_env, registered_ids

    rows, skipped = [], []
    for env_id in args.env or registered_ids():
        kwargs, why = loader_kwargs(env_id, args.data_dir)
        if why:
            skipped.append(f"{env_id}: {why}")
            continue
        try:
            t = time.perf_counter()
            env = make_env(env_id, **kwargs)
            build_s = time.perf_counter() - t
        except Exception as exc:  # noqa: BLE001  (report and go on with the other envs)
            skipped.append(f"{env_id}: could not build ({type(exc).__name__}: {exc})")
            continue
        r = time_oracle(env, lambda i: {"seed": args.seed + i}, episodes=args.episodes)
        env.close()
        rows.append((env_id, r, build_s))

    print(f"Oracle-policy throughput, {args.episodes} episodes per env, Python {platform.python_version()}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| env | episodes | steps | steps/s | episodes/s | oracle success | build s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for env_id, r, build_s in rows:
        print(f"| {env_id} | {r['episodes']} | {r['steps']} | {r['steps'] / max(r['step_s'], 1e-9):,.0f} | "
              f"{r['episodes'] / max(r['total_s'], 1e-9):,.0f} | {r['successes'] / max(r['episodes'], 1):.2f} | {build_s:.2f} |")
    for line in skipped:
        print(f"\nskipped {line}")


if __name__ == "__main__":
    main()
