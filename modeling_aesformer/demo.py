"""`aesformer demo`: the whole inference path on embedded data, with no downloads.

Until the synthetic aesthetic dataset and the training stages exist, the demo uses a tiny RANDOMLY INITIALISED
model: its scores carry no aesthetic meaning. It shows the plumbing a user relies on: build a model and processor,
save them as a Hub-style folder, reload them with the Auto classes, and score images with and without comments
(each sample routed to its branch).
"""

import csv
import tempfile
from pathlib import Path

import torch
from transformers import AutoModel, AutoProcessor, BertTokenizer

from . import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
from .toy import draw_scene, write_toy_vocab

_COMMENTS = [
    "lovely soft light and a well placed subject",
    None,
    "too dark, the horizon is tilted",
    "",
    ["great colour harmony", "sharp focus on the subject"],
    None,
]


def run_demo(output_dir="aesformer-demo", quick: bool = False) -> int:
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = AesformerConfig.from_preset("tiny")
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = BertTokenizer(vocab=str(write_toy_vocab(Path(tmp) / "vocab.txt", config.text_config.vocab_size)))
    size = config.vision_config.image_size
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": size, "width": size}), tokenizer)
    processor.check_vocab_size(config.text_config.vocab_size)
    model_dir = output / "model"
    AesformerModel(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    print(f"[demo] tiny Aesformer with RANDOM weights saved to {model_dir} (scores below are not meaningful yet)")

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    n = 4 if quick else len(_COMMENTS)
    images = [draw_scene(seed) for seed in range(n)]
    inputs = processor(images=images, comments=_COMMENTS[:n], return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
    threshold = model.config.score_threshold
    rows = []
    print(f"{'image':>5}  {'branch':<13} {'score':>6} {'label':<5} comments")
    for i in range(n):
        text = _COMMENTS[i] if isinstance(_COMMENTS[i], str) else " | ".join(_COMMENTS[i] or [])
        branch = "with_comments" if out.used_comments[i] else "image_only"
        score = float(out.score[i])
        label = "high" if score > threshold else "low"
        rows.append({"image": i, "branch": branch, "score": round(score, 4), "label": label,
                     "comments": text})
        print(f"{i:>5}  {branch:<13} {score:6.3f} {label:<5} {text}")
    with open(output / "scores.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"[demo] scores written to {output / 'scores.csv'}")
    return 0
