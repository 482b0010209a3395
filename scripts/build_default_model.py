"""Build the embedded default model shipped in ``pbsd_agents/assets/default-model``.

    python scripts/build_default_model.py            # rebuilds it reproducibly (seeded), ~25 min on 2 cores

Steps, all seeded:
1. A corpus of conversations from the procedural environments (ToolCall, MathCalc, Retail): student
   and teacher views with the oracle's assistant turns and the real tool results
   (:func:`pbsd_agents.episode.play_oracle`).
2. A byte-level BPE tokenizer trained on that corpus with ``tokenizers``. Digits are split one by
   one, so a number tokenizes the same in a tool result and in an answer.
3. A chat template with tools: compact tool signatures in the system turn, Hermes-style
   ``<tool_call>`` calls, ``tool`` turns for results.
4. A small Qwen2 model (~1-2 M parameters). One attention head of the first layer starts as a
   previous-token head (its RoPE phases set so position t attends to t-1), and a short warm-up on
   copying random token strings turns it into an induction circuit: every argument value the agent
   writes is copied from the question, a tool result or the privileged context, and a 1 M model on
   2 CPU cores does not find that circuit by itself within the build budget (random-string copy
   accuracy stayed at 0.1 after 1,000 steps without the init, 0.96 after 400 steps with it).
5. Supervised fine-tuning on fresh oracle demonstrations of the three envs (each seen about once),
   run by the kit itself: ``pbsd-agents train --algo sft --algo-arg source=oracle`` (the
   :class:`~pbsd_agents.trainer.Trainer`, a run folder under ``<out>.build/``), with a share
   ``--teacher-view-fraction`` of teacher-view demonstrations (privileged context shown). Fewer
   student-view demonstrations leave the gap PBSD is there to close: the teacher view succeeds far
   more often than the student view on held-out tasks.
   Shipped build (64 held-out tasks, greedy): ToolCall student 0.14 / teacher 0.81, MathCalc
   0.00 / 1.00, Retail 0.03 / 0.55. That build predates step 5 running through the kit: its own
   loop showed a per-env share of student-view demonstrations (ToolCall 0.25, MathCalc 0.03, Retail
   0.45; with 0.35 everywhere the student view learned MathCalc's 11 templates and no gap was
   left), mixed copy demos into every batch and used a one-cycle learning rate. A rebuild with this
   script has not been measured at full size.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "pbsd_agents" / "assets" / "default-model"
ENVS = ("pbsd/ToolCall-v0", "pbsd/MathCalc-v0", "pbsd/Retail-v0")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message.role != 'system' and tools %}"
    "{{- '<|im_start|>system\\n' }}{{- render_tools(tools) }}{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content }}"
    "{%- if loop.first and message.role == 'system' and tools %}{{- '\\n' }}{{- render_tools(tools) }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Jinja macros must precede their use; the template is the macro + the body.
TOOLS_MACRO = (
    "{%- macro render_tools(tools) -%}"
    "Tools:"
    "{%- for tool in tools %}"
    "{%- set f = tool.function if tool.function is defined else tool %}"
    "{{- ' ' + f.name + '(' }}"
    "{%- set props = f.parameters.properties if f.parameters is defined and f.parameters.properties is defined else {} %}"
    "{%- set req = f.parameters.required if f.parameters is defined and f.parameters.required is defined else [] %}"
    "{%- for k in props %}{{- k }}{%- if k not in req %}{{- '?' }}{%- endif %}{%- if not loop.last %}{{- ', ' }}{%- endif %}{%- endfor %}"
    "{{- ')' }}{%- if not loop.last %}{{- ';' }}{%- endif %}"
    "{%- endfor %}"
    "{{- '\\nCall a tool with <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call>.' }}"
    "{%- endmacro -%}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<tool_call>", "</tool_call>"]


def corpus_episodes(env_id: str, n: int, seed: int) -> list:
    """The oracle's conversations (both views) on ``n`` tasks of ``env_id`` drawn by seeded resets."""
    from pbsd_agents.envs.registry import make_env
    from pbsd_agents.episode import play_oracle

    env = make_env(env_id)
    rng = random.Random(seed)
    return [play_oracle(env, seed=rng.randrange(2**31)).conversation for _ in range(n)]


def corpus_text(messages: list[dict]) -> str:
    """The messages' contents, one per line; an assistant turn the env did not answer is followed by an empty line."""
    parts = []
    for k, m in enumerate(messages):
        parts.append(m["content"])
        if m["role"] == "assistant" and (k + 1 == len(messages) or messages[k + 1]["role"] == "assistant"):
            parts.append("")
    return "\n".join(parts)


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL + ADDED, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None,
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = TOOLS_MACRO + CHAT_TEMPLATE
    fast.model_max_length = 2048
    return fast


# LP-optimal weights of the 8 fastest RoPE frequencies: attention at distance 1 beats every other
# distance up to 4096 by 0.175 per unit of total weight (solved once with scipy.optimize.linprog).
_PREV_TOKEN_WEIGHTS = (0.357, 0.032, 0.033, 0.251, 0.046, 0.159, 0.069, 0.052)


def previous_token_init(model, layer: int = 0, head: int = 0, margin: float = 8.0) -> None:
    """Make one head attend from every position to the one before it, via the q/k biases alone.

    With RoPE, q_t . k_s = sum_i |q_i||k_i| cos(theta_i (t - s) + phase_i); choosing phase_i = -theta_i
    puts the maximum of every term at t - s = 1, and ``margin`` nats separate it from any other distance.
    """
    import math

    cfg = model.config
    attn = model.model.layers[layer].self_attn
    hd = cfg.hidden_size // cfg.num_attention_heads
    theta = cfg.rope_parameters["rope_theta"]
    kv = head // (cfg.num_attention_heads // cfg.num_key_value_heads)
    q_rows, k_rows = slice(head * hd, (head + 1) * hd), slice(kv * hd, (kv + 1) * hd)
    q_bias, k_bias = torch.zeros(hd), torch.zeros(hd)
    for i, w in enumerate(_PREV_TOKEN_WEIGHTS):
        freq = theta ** (-2 * i / hd)
        r = math.sqrt(w * margin / 0.175 * math.sqrt(hd))
        k_bias[i] = r
        q_bias[i], q_bias[i + hd // 2] = r * math.cos(freq), -r * math.sin(freq)
    with torch.no_grad():
        attn.q_proj.weight[q_rows] = 0
        attn.k_proj.weight[k_rows] = 0
        attn.q_proj.bias[q_rows] = q_bias
        attn.k_proj.bias[k_rows] = k_bias


def copy_demo(tokenizer, rng: random.Random) -> tuple[list[int], list[int]]:
    """A user turn holding a random token string and an assistant turn repeating it (the loss is on the repeat).

    Nothing else in the user turn: random filler before the string delays the circuit several-fold.
    """
    low = len(SPECIAL) + len(ADDED)
    x = [rng.randrange(low, len(tokenizer)) for _ in range(rng.randint(8, 48))]
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    prompt = [start, *tokenizer.encode("user\n"), *x, end, start, *tokenizer.encode("assistant\n")]
    return prompt + x + [end], [0] * len(prompt) + [1] * (len(x) + 1)


def nll_step(model, opt, sched, views, pad_id: int):
    """One optimizer step on the mean NLL of the action tokens of ``views``."""
    from pbsd_agents.algorithms.scoring import action_logits

    out = action_logits(model, views, pad_id=pad_id)
    loss = -out.token_logprobs().mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return out, loss


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tasks-per-env", type=int, default=8000,
                   help="oracle episodes per environment in the corpus; the tokenizer is trained on ~3000 of them "
                        "(the SFT step draws fresh demonstrations)")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--copy-steps", type=int, default=1000, help="most warm-up steps on copying random token strings")
    p.add_argument("--steps", type=int, default=2000, help="SFT steps")
    p.add_argument("--batch", type=int, default=16, help="demonstrations per SFT step")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--teacher-view-fraction", type=float, default=0.75,
                   help="share of demonstrations shown in the teacher view (privileged context in the prompt)")
    p.add_argument("--eval-tasks", type=int, default=64)
    p.add_argument("--init", type=Path, default=None,
                   help="continue SFT from this model folder (its tokenizer is kept) instead of starting fresh")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (a GPU makes the build take ~2 minutes)")
    args = p.parse_args(argv)

    import pbsd_agents  # noqa: F401  (registers the envs)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    if args.init:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.init)
    else:
        episodes = [c for k, env_id in enumerate(ENVS) for c in corpus_episodes(env_id, args.tasks_per_env, args.seed * 100 + k)]
        texts = [corpus_text(msgs) for conv in episodes[:: max(1, len(episodes) // 3000)]
                 for msgs in (conv.student_messages, conv.teacher_messages)]
        print(f"corpus: {len(episodes)} episodes ({time.time() - t0:.0f}s)", flush=True)
        tokenizer = train_tokenizer(texts, args.vocab_size)
    print(f"tokenizer: {len(tokenizer)} tokens ({time.time() - t0:.0f}s)", flush=True)

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=None, eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id, rope_theta=10000.0,
        # Larger than the 0.02 default: with 0.02 the attention logits start ~0.05 and sit on a plateau.
        initializer_range=0.05,
    )
    from pbsd_agents.loading import resolve_device

    device = resolve_device(args.device)
    rng = random.Random(args.seed)
    if args.init:
        model = Qwen2ForCausalLM.from_pretrained(args.init)
    else:
        model = Qwen2ForCausalLM(config)
        previous_token_init(model)
        model.to(device)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
        warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / 50))
        for step in range(1, args.copy_steps + 1):
            out, loss = nll_step(model, opt, warmup, [copy_demo(tokenizer, rng) for _ in range(32)], tokenizer.pad_token_id)
            if step % 50 == 0:
                accuracy = (out.logits.argmax(-1) == out.targets).float().mean().item()
                print(f"copy step {step}/{args.copy_steps} loss {loss.item():.3f} accuracy {accuracy:.2f} "
                      f"({time.time() - t0:.0f}s)", flush=True)
                if accuracy > 0.95:
                    break
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters", flush=True)

    # Step 5 is the kit's offline SFT: the copy-trained model goes in as a folder, a run folder comes out.
    from pbsd_agents.runlog import read_jsonl
    from pbsd_agents.trainer import TrainConfig, Trainer

    build = args.out.with_name(args.out.name + ".build")
    if build.exists():
        shutil.rmtree(build)
    start = build / "start"
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = config.eos_token_id
    model.to("cpu").save_pretrained(start)
    tokenizer.save_pretrained(start)
    trainer = Trainer(TrainConfig(
        model=str(start), env=ENVS[0], algo="sft", seed=args.seed, device=args.device, out=str(build / "sft"),
        algo_args={"source": "oracle", "envs": ",".join(ENVS), "teacher_view_fraction": args.teacher_view_fraction},
        steps=args.steps, tasks_per_step=args.batch, lr=args.lr, weight_decay=0.01, warmup_steps=max(1, args.steps // 20),
        eval_every=0, eval_tasks=1, pass_k=1, save_every=0, keep_last=1))
    trainer.train()
    model = trainer.policy.model
    last = read_jsonl(build / "sft" / "metrics.jsonl")[-1]
    print(f"sft: {last['step']} steps, last loss {last['loss']} ({time.time() - t0:.0f}s)", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.eval()
    # Shards under 2 MB each: the weights are tracked in git, which keeps single files small.
    model.to("cpu").save_pretrained(args.out, max_shard_size="1500KB")
    tokenizer.save_pretrained(args.out)
    shutil.rmtree(build)
    (args.out / "BUILD.json").write_text(json.dumps({**{k: (str(v.resolve().relative_to(ROOT)) if v.resolve().is_relative_to(ROOT) else str(v)) if isinstance(v, Path) else v for k, v in vars(args).items()}, "params": n_params}, indent=2))
    print(f"saved to {args.out} ({time.time() - t0:.0f}s)", flush=True)

    from pbsd_agents.loading import load_policy
    from pbsd_agents.rollout import Collector

    policy = load_policy(str(args.out), device=device, dtype="float32")
    collector = Collector.for_policy(policy, progress=False)
    gap = {}
    for env_id in ENVS if args.eval_tasks else ():
        row = {}
        for view in ("student", "teacher"):
            trajs = collector.collect(env_id, list(range(args.eval_tasks)), env_kwargs={"split": "test"}, view=view,
                                      temperature=0.0, max_new_tokens=160, max_tokens=512)
            row[view] = sum(t.success for t in trajs) / len(trajs)
        gap[env_id] = row
        print(f"{env_id}: held-out greedy success student {row['student']:.2f}, teacher {row['teacher']:.2f}", flush=True)
    (args.out / "BUILD.json").write_text(json.dumps({**json.loads((args.out / "BUILD.json").read_text()), "gap": gap}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
