import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quick_demo_runs_end_to_end_and_learns_the_distribution(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    run = subprocess.run([sys.executable, "-m", "aesformer_cli", "demo", "--quick", "--output", str(out)],
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"untrained, image only", "untrained, with comments", "image only (adapter)",
                            "image only, images with comments", "with comments", "image only, 1-7 adapter"}
    assert metrics["image only, images with comments"]["n"] == metrics["with comments"]["n"]
    for row in metrics.values():
        assert row["n"] > 0 and all(k in row for k in ("accuracy", "plcc", "srcc", "emd_r1", "emd_r2"))
    # A quick run fits the vote distributions (EMD) but is too short to learn the ranking (SRCC needs the full run's
    # ~300 steps past the plateau). Measured on the quick run (seed 0, this machine, bit-identical between runs):
    # with comments EMD 0.101 vs 0.165 untrained; image only 0.132 vs 0.165.
    assert metrics["with comments"]["emd_r2"] < 0.8 * metrics["untrained, with comments"]["emd_r2"]
    assert metrics["image only (adapter)"]["emd_r2"] < 0.9 * metrics["untrained, image only"]["emd_r2"]
    assert "srcc" in run.stdout and "with comments" in run.stdout  # the table is printed
    assert "--quick is a smoke run" in run.stdout  # and says its ranking numbers mean nothing
    # the demo's model answers images without comments with its trained 1-10 adapter, wherever it is loaded
    for folder in (out / "stage1" / "model", out / "hub"):
        assert json.loads((folder / "config.json").read_text())["default_adapter"] == "synthetic"
    # the adapters sit in the backbone folder; the exported folder and figures exist
    assert sorted(os.listdir(out / "stage1" / "model" / "adapters")) == ["synthetic", "synthetic7"]
    assert (out / "hub" / "config.json").is_file() and (out / "hub" / "README.md").is_file()
    plots = sorted(os.listdir(out / "plots"))
    assert "scatter.png" in plots and any(p.startswith("explain-") for p in plots)
    for name in plots:
        assert (out / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# The demo's recipe, shortened to what CI affords (about two minutes on 2 cores) while its image-only answers still
# spread out (fp32 score std 0.135 on the test split, the same with 1 and 2 threads): --quick's 800 images for
# 8 + 5 epochs leave them within 0.02 of each other, and a bar on ranking needs answers that vary.
INT8_RECIPE = {"size": 1000, "stage1_epochs": 15, "stage2_epochs": 10, "warmup_steps": 40}


@pytest.mark.slow
def test_int8_meets_the_agreement_bar_on_the_demos_trained_model(tmp_path):
    """`--dtype int8` ships on this bar, checked on the demo's trained model (its exported folder, the test split's
    images, through the scoring module): Spearman >= 0.995 with fp32, every score within 0.05, labels flipped only
    where the fp32 score is within 0.05 of the threshold. (Measured on the full demo, 602 images: Spearman 0.999,
    largest difference 0.033, 6 flips, all within 0.05 of the threshold: `bench/bench_int8.py`.)"""
    pytest.importorskip("onnxruntime.quantization")
    pytest.importorskip("onnxscript")
    import csv

    from aesformer_training.demo import run_demo

    out = tmp_path / "demo"
    run_demo(out, overrides=INT8_RECIPE, log=lambda *a: None)
    import numpy as np
    from scipy.stats import spearmanr

    from modeling_aesformer.loading import load_model
    from modeling_aesformer.scoring import score_files

    with open(out / "data" / "synthetic" / "metadata.csv", newline="", encoding="utf-8") as f:
        paths = [str(out / "data" / "synthetic" / row["file_name"]) for row in csv.DictReader(f)
                 if row["split"] == "test"]
    model, processor, _ = load_model(out / "hub", ["synthetic"], images_only_ok=True, log=lambda *a: None)
    scored = {}
    for name, options in (("fp32", {}), ("int8", {"backend": "onnxruntime", "dtype": "int8"})):
        rows = list(score_files(model, processor, paths, adapter="synthetic", batch_size=32, model_dir=out / "hub",
                                **options))
        assert [row["error"] for row in rows] == [None] * len(paths)
        scored[name] = rows
    fp32 = np.array([row["score"] for row in scored["fp32"]])
    int8 = np.array([row["score"] for row in scored["int8"]])
    threshold = scored["fp32"][0]["threshold"]
    assert fp32.std() >= 0.05, f"the demo's image-only scores hardly vary (std {fp32.std():.4f})"
    flipped = (fp32 > threshold) != (int8 > threshold)
    assert spearmanr(fp32, int8)[0] >= 0.995
    assert np.abs(fp32 - int8).max() <= 0.05
    assert np.all(np.abs(fp32[flipped] - threshold) <= 0.05)
    assert np.abs(fp32 - int8).max() > 1e-6  # int8 did answer: its rounding moves scores


def test_demo_vocabulary_is_deterministic_and_covers_unseen_words(tmp_path):
    from aesformer_training.demo import train_tokenizer

    texts = ["Too dark, boring subject.", "Lovely light! Boring crop.", "lovely colours, too dark"] * 3
    first = train_tokenizer(texts, tmp_path / "a", vocab_size=200)
    second = train_tokenizer(list(reversed(texts)), tmp_path / "b", vocab_size=200)
    vocab = (tmp_path / "a" / "vocab.txt").read_text().split("\n")
    assert (tmp_path / "b" / "vocab.txt").read_text() == (tmp_path / "a" / "vocab.txt").read_text()
    # specials, then words by frequency (ties alphabetical), then characters and their ## continuations
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:9] == ["boring", "dark", "lovely", "too"]
    ids = first("sunny dark")["input_ids"]
    assert first.unk_token_id not in ids  # an unseen word splits into character pieces
    assert first.convert_ids_to_tokens(ids)[1:-1] == ["s", "##u", "##n", "##n", "##y", "dark"]
    assert len(first) == len(second) == len(vocab) - 1  # the file ends with a newline
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts, tmp_path / "c", vocab_size=10)
