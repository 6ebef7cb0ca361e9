#!/usr/bin/env python
"""Dynamic int8 (ONNX Runtime `quantize_dynamic`, weights int8, activations quantized per call) of the image-only
branch, against fp32, on the demo's trained model: does it pass the agreement bar that would let it ship behind
`--dtype int8`? SRCC >= 0.995 with fp32, max |score difference| <= 0.05, label flips only where the fp32 score is
within 0.05 of the threshold. Also its speed next to ONNX Runtime fp32 on the same inputs.

    python bench/bench_int8.py --demo-dir aesformer-demo [--adapter synthetic]

`--demo-dir`: the output of `aesformer demo --output DIR` (its hub/ model and the test split of data/synthetic). JSON:
bench/results/int8.json.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_agreement import agreement  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", required=True)
    parser.add_argument("--adapter", default="synthetic")
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    common.setup_offline()

    import numpy as np
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from aesformer_training.loaders import load_generic
    from modeling_aesformer import onnx_backend
    from modeling_aesformer.loading import load_model

    demo = Path(args.demo_dir)
    model, processor, _ = load_model(demo / "hub", [args.adapter], images_only_ok=True, log=lambda *a: None)
    data, _ = load_generic(demo / "data" / "synthetic")
    import PIL.Image

    image_processor = getattr(processor, "image_processor", processor)
    images = [PIL.Image.open(row["image"]).convert("RGB") for row in data["test"]]
    pixels = image_processor(images, return_tensors="pt")["pixel_values"].numpy()
    folder = Path(tempfile.mkdtemp(prefix="aesformer-int8-"))
    fp32_path = onnx_backend.export_image_only(model, folder / "model.onnx", args.adapter)
    int8_path = folder / "model_int8.onnx"
    quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
    with torch.inference_mode():
        torch_out = model.forward_adapters(torch.from_numpy(pixels), adapters=[args.adapter])[args.adapter]
    reference, threshold = torch_out.score.numpy(), torch_out.threshold.numpy()
    fp32 = onnx_backend.RuntimeAnswer(fp32_path, "onnxruntime")
    int8 = onnx_backend.RuntimeAnswer(int8_path, "onnxruntime")
    results = {}
    for name, answer in (("onnxruntime fp32", fp32), ("onnxruntime int8 (dynamic)", int8)):
        scores = np.concatenate([answer(pixels[i:i + 32])["score"] for i in range(0, len(pixels), 32)])
        results[name] = agreement(reference, scores, threshold)
    batch = pixels[:8]
    times = common.interleaved({"fp32": lambda: fp32(batch), "int8": lambda: int8(batch)}, repeats=5, warmup=1)
    rows_out = [{"path": name, **{k: v for k, v in r.items() if not k.startswith("_")},
                 "meets the bar": "yes" if r["_ok"] else "NO"} for name, r in results.items()]
    print(common.table(rows_out, list(rows_out[0]), title=f"{demo.name} ({args.adapter}), {len(pixels)} images, "
                       f"against torch fp32; {common.cpu_model()}"))
    speed = common.median(times["fp32"]) / common.median(times["int8"])
    print(f"\nint8 speed: {speed:.2f}x ONNX Runtime fp32 (batch 8, median of 5; {time.strftime('%H:%M')})")
    common.save_results("int8", {"rows": rows_out, "int8_vs_fp32_speed": speed,
                                 "machine": common.machine_info()}, args.output)
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
