"""Test environment: offline, a throw-away HF_HOME, no interactive remote-code prompt, small thread count."""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
if "HF_HOME" not in os.environ:
    os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="aesformer-hf-home-")
    atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# the precision probe's measurements and on-the-fly ONNX exports go to a throw-away cache, not the user's
os.environ["AESFORMER_CACHE"] = os.path.join(os.environ["HF_HOME"], "aesformer-cache")
# `--dtype auto` picks bf16 on some CPUs and fp32 on others: the commands' default is fp32 here, so that their scores
# equal the (fp32) Python API's on every machine; the precision tests pass --dtype explicitly.
os.environ["AESFORMER_DTYPE"] = "fp32"

import pytest  # noqa: E402
import torch  # noqa: E402
import transformers.dynamic_module_utils  # noqa: E402

transformers.dynamic_module_utils.TIME_OUT_REMOTE_CODE = 0
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def tiny_tokenizer(tmp_path):
    from _helpers import tokenizer_for

    tokenizer = tokenizer_for(tmp_path)
    assert len(tokenizer) == 512  # the 5.x `vocab_file=` trap builds a 5-token vocab
    return tokenizer


@pytest.fixture(scope="module")
def one_torch_thread():
    """A tiny model gains nothing from 2 threads, and on a shared 2-core machine 2 spinning OpenMP threads make
    each forward up to 100x slower: modules that use this run single-threaded, then the setting is restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny saved model folder (no adapters), one per test module."""
    from _helpers import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    """A folder of the hostile image files of `_helpers.HOSTILE`, each built from bytes."""
    from _helpers import write_hostile_files

    return write_hostile_files(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def model_dir_with_adapters(tmp_path_factory):
    """A tiny saved model folder with the toy adapters (scale 0.2: their answers differ clearly from the base's)."""
    from _helpers import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("tiny-adapters") / "model", adapters_scale=0.2)
