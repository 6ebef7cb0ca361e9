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
