"""Test environment: offline, a throw-away HF_HOME, no interactive remote-code prompt, small thread count."""

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="aesformer-hf-home-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers.dynamic_module_utils  # noqa: E402

transformers.dynamic_module_utils.TIME_OUT_REMOTE_CODE = 0
torch.set_num_threads(min(2, os.cpu_count() or 1))


def write_vocab(path, size):
    """A WordPiece vocab.txt with exactly `size` entries: BERT specials, letters, a few words, filler."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = (
        "the a an is of and to in great nice photo image colour color composition light sharp blurry dark "
        "bright lovely boring focus subject sky horizon noise exposure love like bad good well done"
    ).split()
    letters = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?-'")
    tokens = specials + words + letters + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    seen, unique = set(), []
    for t in tokens:
        if t not in seen:
            seen.add(t)
            unique.append(t)
    if len(unique) > size:
        raise ValueError(f"vocab size {size} too small for {len(unique)} base tokens")
    unique += [f"[unused{i}]" for i in range(size - len(unique))]
    path.write_text("\n".join(unique) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tiny_tokenizer(tmp_path):
    from transformers import BertTokenizer

    vocab = write_vocab(tmp_path / "vocab.txt", 512)
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=False)
    assert len(tokenizer) == 512  # the 5.x `vocab_file=` trap builds a 5-token vocab
    return tokenizer
