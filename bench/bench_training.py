#!/usr/bin/env python
"""Training steps on CPU, fp32, Aesformer-T at the same batch: seconds per stage-1 step (with comments: EMD of both
VL heads + 0.5·ITC with momentum encoders and queues; Swin, BERT and the fusion train) against a stage-2 step (a
`faithful` dataset adapter on the frozen backbone: EMD + 10·MSE), both as the training loop runs them
(`aesformer_training.losses.PretrainObjective` / `AdaptObjective`, AdamW with the loop's settings), interleaved,
median of the repeats. Also: the stage-2 trainable fraction, and the peak memory (RSS) of each stage measured in a
fresh process.

    python bench/bench_training.py            # batch 4, ~1.5 min on 2 cores

Writes bench/results/training.json.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

STAGES = ("pretrain", "adapt")


def make_batch(batch: int, tokens: int, vocab: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, min(28000, vocab), (batch, tokens), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    return {
        "pixel_values": torch.randn(batch, 3, 224, 224, generator=g),
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "token_type_ids": torch.zeros_like(input_ids),
        "labels": torch.randint(0, 50, (batch, 10), generator=g).float() + 1,  # vote counts
    }


def build_stage(stage: str, workdir: str, seed: int = 0):
    """(objective, optimizer, counts) set up as `aesformer_training.loop.train` does for `stage`."""
    import torch

    from aesformer_training.losses import AdaptObjective, PretrainObjective
    from aesformer_training.train_config import TrainConfig
    from modeling_aesformer import AesformerConfig, AesformerModel

    torch.manual_seed(seed)
    model = AesformerModel(AesformerConfig.from_preset("aesformer-t"))
    config = TrainConfig(stage=stage, output_dir=os.path.join(workdir, stage))
    if stage == "pretrain":
        objective = PretrainObjective(model, config)
        scored = model
    else:
        from modeling_aesformer.adapters import add_dataset_adapter

        scored = add_dataset_adapter(model, "bench")
        objective = AdaptObjective(scored, config)
    trainable = [p for p in objective.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    objective.train()
    counts = {"trainable": sum(p.numel() for p in trainable),
              "total": sum(p.numel() for p in scored.parameters())}
    return objective, optimizer, counts


def step(objective, optimizer, batch):
    loss, _ = objective(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def memory_probe(stage: str, batch: int, tokens: int, steps: int) -> dict:
    """In a fresh process: RSS after set-up, peak RSS over `steps` steps."""
    import torch

    with tempfile.TemporaryDirectory() as workdir:
        objective, optimizer, counts = build_stage(stage, workdir)
        data = make_batch(batch, tokens, 28996)
        before = common.proc_status_mb("VmRSS")
        peak_setup = common.proc_status_mb("VmHWM")
        for _ in range(steps):
            step(objective, optimizer, data)
        peak = common.proc_status_mb("VmHWM")
    return {"stage": stage, "rss_after_setup_mb": before, "peak_rss_setup_mb": peak_setup, "peak_rss_mb": peak,
            "torch_threads": torch.get_num_threads(), **counts}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="batch of both stages (default 4)")
    parser.add_argument("--comment-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--memory-steps", type=int, default=2, help="steps per memory probe (fresh process)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/training.json)")
    parser.add_argument("--probe", choices=STAGES, help=argparse.SUPPRESS)  # internal: one memory probe
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    common.setup_offline()
    import logging

    logging.getLogger("transformers").setLevel(logging.ERROR)
    common.set_threads(args.threads)
    if args.probe:
        print(json.dumps(memory_probe(args.probe, args.batch, args.comment_tokens, args.memory_steps)))
        return 0

    info, foreign = common.start_measuring(args.wait_idle)
    print(f"# {info['cpu']}, {info['torch_threads']} torch threads, load {info['load_average_start']}")
    with tempfile.TemporaryDirectory() as workdir:
        built = {stage: build_stage(stage, workdir) for stage in STAGES}
        data = make_batch(args.batch, args.comment_tokens, 28996)
        image_only = {k: v for k, v in data.items() if k in ("pixel_values", "labels")}
        candidates = {
            "stage 1 step (pretrain)": lambda: step(*built["pretrain"][:2], data),
            "stage 2 step (adapt)": lambda: step(*built["adapt"][:2], image_only),
        }
        times = common.interleaved(candidates, repeats=args.repeats, warmup=args.warmup)
    load_end = common.load_average()

    probes = {}
    if not args.no_memory:
        for stage in STAGES:
            cmd = [sys.executable, os.path.abspath(__file__), "--probe", stage, "--batch", str(args.batch),
                   "--comment-tokens", str(args.comment_tokens), "--memory-steps", str(args.memory_steps)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            probes[stage] = json.loads(done.stdout.strip().splitlines()[-1])

    med = {k: common.median(v) for k, v in times.items()}
    s1, s2 = med["stage 1 step (pretrain)"], med["stage 2 step (adapt)"]
    rows = []
    for (name, seconds), stage in zip(med.items(), STAGES):
        counts = built[stage][2]
        row = {"step": name, "batch": args.batch, "s/step": seconds, "spread": common.spread(times[name]),
               "images/s": args.batch / seconds, "trainable params (M)": counts["trainable"] / 1e6,
               "trainable share": f"{100 * counts['trainable'] / counts['total']:.1f} %"}
        if stage in probes:
            row["peak RSS (MB)"] = probes[stage]["peak_rss_mb"]
            row["RSS after set-up (MB)"] = probes[stage]["rss_after_setup_mb"]
        rows.append(row)
    goals = [common.goal_row("stage-2 step / stage-1 step (same batch)", s2 / s1, 1 / 3, "×",
                             higher_is_better=False, target_label="1/3")]

    print()
    print(common.table(rows, ["step", "batch", "s/step", "spread", "images/s", "trainable params (M)",
                              "trainable share", "RSS after set-up (MB)", "peak RSS (MB)"],
                       title="Training steps, Aesformer-T, fp32, CPU (AdamW step included)"))
    print()
    print(common.table(goals, ["goal", "target", "measured", "met"], title="Goal"))
    print()

    others = common.report_foreign(foreign)
    path = common.save_results("training", {
        "machine": info, "load_average_end": load_end, "batch": args.batch, "comment_tokens": args.comment_tokens,
        "repeats": args.repeats, "rows": rows, "ratio_stage2_over_stage1": s2 / s1, "goals": goals,
        "memory_probes": probes, "raw_seconds": times,
        "stage2_trainable_fraction": built["adapt"][2]["trainable"] / built["adapt"][2]["total"],
    }, args.output, foreign_cores=others)
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
