#!/usr/bin/env python
"""Dataset adapters: three adapters answered in ONE call (`model.forward_adapters(x, adapters=[a, b, c])`: Swin
runs once, the image-only branch once per adapter) against three separate calls, Aesformer-T, image-only, fp32, CPU,
interleaved, median of the repeats. Checks first that both give the same outputs.

    python bench/bench_adapters.py          # ~1 min on 2 cores (peft import included)

Writes bench/results/adapters.json.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ADAPTERS = (("ava", 10), ("photonet", 7), ("jas", 10))


def build(seed: int = 0):
    import torch

    from modeling_aesformer import AesformerConfig, AesformerModel
    from modeling_aesformer.adapters import add_dataset_adapter

    torch.manual_seed(seed)
    model = AesformerModel(AesformerConfig.from_preset("aesformer-t"))
    for name, bins in ADAPTERS:
        model = add_dataset_adapter(model, name, num_score_bins=bins)
    # Give each adapter its own weights (a fresh copy equals the base): outputs then differ per adapter.
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if any(f".{name}." in pname or pname.endswith(f".{name}") for name, _ in ADAPTERS):
                param.add_(torch.randn_like(param) * 0.01)
    return model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/adapters.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    common.setup_offline()
    import torch

    common.set_threads(args.threads)
    info, foreign = common.start_measuring(args.wait_idle)
    print(f"# {info['cpu']}, {info['torch_threads']} torch threads, load {info['load_average_start']}")

    model = build()
    names = [name for name, _ in ADAPTERS]
    pixels = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))

    with torch.inference_mode():
        together = model.forward_adapters(pixels, adapters=names)
        separate = {name: model(pixels, adapter=name) for name in names}
    max_diff = max(
        float((together[n].distribution - separate[n].distribution).abs().max()) for n in names
    )
    distinct = float((together["ava"].distribution[:, :7] - together["photonet"].distribution[:, :7]).abs().max())
    if max_diff > 1e-5:
        print(f"ERROR: one call and separate calls disagree (max |diff| {max_diff:.2e})", file=sys.stderr)
        return 1

    candidates = {
        "1 adapter, 1 call": lambda: model(pixels, adapter=names[0]),
        "3 adapters, 1 call": lambda: model.forward_adapters(pixels, adapters=names),
        "3 adapters, 3 calls": lambda: [model(pixels, adapter=n) for n in names],
    }
    with torch.inference_mode():
        times = common.interleaved(candidates, repeats=args.repeats, warmup=args.warmup)
    load_end = common.load_average()

    med = {k: common.median(v) for k, v in times.items()}
    rows = [{"candidate": k, "batch": args.batch, "ms": med[k] * 1e3, "spread": common.spread(times[k]),
             "images/s (per adapter answer)": args.batch * (3 if "3 adapters" in k else 1) / med[k]}
            for k in candidates]
    ratio = med["3 adapters, 1 call"] / med["3 adapters, 3 calls"]
    goals = [common.goal_row("3 adapters in one call / three calls", ratio, 0.65, "×", higher_is_better=False)]

    print()
    print(common.table(rows, ["candidate", "batch", "ms", "spread", "images/s (per adapter answer)"],
                       title="Dataset adapters, Aesformer-T image-only, fp32, CPU"))
    print()
    print(common.table(goals, ["goal", "target", "measured", "met"], title="Goal"))
    print(f"\none call vs separate calls: max |distribution diff| {max_diff:.1e} (adapters differ from each other "
          f"by up to {distinct:.1e})")

    others = common.report_foreign(foreign)
    path = common.save_results("adapters", {
        "machine": info, "load_average_end": load_end, "batch": args.batch, "repeats": args.repeats,
        "adapters": dict(ADAPTERS), "rows": rows, "ratio_one_call_over_three": ratio, "goals": goals,
        "max_abs_diff_one_call_vs_separate": max_diff, "raw_seconds": times,
    }, args.output, foreign_cores=others)
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
