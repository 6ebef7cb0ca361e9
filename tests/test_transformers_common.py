"""transformers' own common tests (`ModelTesterMixin`, `ConfigTester`, `ImageProcessingTestMixin`,
`ProcessorTesterMixin`) run against the tiny Aesformer, the way `tests/models/clip` and `tests/models/siglip` use
them in transformers.

The testers are not copied into this repository: the source distribution of the INSTALLED transformers version is
fetched from the package registry (`pip download --no-binary :all: --no-deps transformers==<version>`) once and
cached under `~/.cache/aesformer/transformers-tests/` (override with `AESFORMER_TRANSFORMERS_TESTS_CACHE`); its
`tests/test_*_common.py` are imported as a package. The sdist lacks a few helper modules the testers import; they are
replaced by small stand-ins below (`_install_stand_ins`). When the registry cannot be reached and nothing is cached,
the module is skipped with a message saying so.

Every common test this file turns off says why, next to the override.
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import importlib
import unittest
from pathlib import Path

import pytest
import torch
import transformers

from modeling_aesformer import (
    AesformerConfig,
    AesformerImageProcessor,
    AesformerModel,
    AesformerProcessor,
)
from modeling_aesformer.attention_maps_aesformer import token_grid
from modeling_aesformer.toy import write_toy_vocab

COMMON_FILES = (
    "test_modeling_common.py",
    "test_configuration_common.py",
    "test_image_processing_common.py",
    "test_processing_common.py",
)
PACKAGE = "transformers_common_tests"
_NETWORK_ERRORS = (
    "NewConnectionError", "Network is unreachable", "Temporary failure in name resolution", "Max retries exceeded",
    "ConnectTimeout", "ReadTimeout", "Connection refused", "No matching distribution found", "ProxyError",
    "Name or service not known", "Could not fetch URL",
)


def _cache_root() -> Path:
    default = Path.home() / ".cache" / "aesformer" / "transformers-tests"
    return Path(os.environ.get("AESFORMER_TRANSFORMERS_TESTS_CACHE", default))


def _common_tests_dir() -> Path:
    """The `tests/` folder of the installed transformers' sdist (downloaded once, then cached)."""
    version = transformers.__version__
    target = _cache_root() / f"transformers-{version}" / "tests"
    if all((target / name).is_file() for name in COMMON_FILES + ("__init__.py",)):
        return target
    with tempfile.TemporaryDirectory(prefix="aesformer-sdist-") as download:
        command = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                   "--disable-pip-version-check", f"transformers=={version}", "-d", download]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
        archives = list(Path(download).glob("transformers-*.tar.gz"))
        if proc.returncode != 0 or not archives:
            log = (proc.stdout + proc.stderr).strip()
            if any(marker in log for marker in _NETWORK_ERRORS):
                pytest.skip(f"transformers {version} sources are not cached in {target.parent} and the package "
                            f"registry is unreachable ({log.splitlines()[-1] if log else 'no output'})",
                            allow_module_level=True)
            raise RuntimeError(f"`{' '.join(command)}` failed:\n{log}")
        staging = Path(tempfile.mkdtemp(prefix="aesformer-sdist-tests-", dir=_ensure(target.parent.parent)))
        with tarfile.open(archives[0]) as archive:
            for member in archive.getmembers():
                parts = Path(member.name).parts
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (staging / parts[2]).write_bytes(archive.extractfile(member).read())
        # The testers import their own folder as a package (`direct_transformers_import`): the sdist has no
        # `tests/__init__.py`, an empty one does.
        (staging / "__init__.py").touch()
        missing = [name for name in COMMON_FILES if not (staging / name).is_file()]
        if missing:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"the transformers {version} sdist has no tests/{missing}")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            staging.rename(target)  # atomic: a concurrent run either finds the whole folder or makes its own
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    if "." not in name[len(PACKAGE) + 1:] and name != PACKAGE:
        module.__path__ = []
    sys.modules[name] = module
    return module


def _local_image_path(url: str) -> str:
    """Stand-in for transformers' CI fixture fetcher: no downloads in tests, so every image URL becomes one local
    generated PNG (the processor tests only need a readable image)."""
    path = _cache_root() / "fixture.png"
    if not path.is_file():
        from modeling_aesformer.toy import draw_scene

        _ensure(path.parent)
        draw_scene(0, size=(64, 48)).save(path)
    return str(path) if url.lower().endswith((".png", ".jpg", ".jpeg")) else url


def _install_stand_ins() -> None:
    """Small stand-ins for the helper modules the sdist's `tests/` folder does not contain."""

    class ExportTesterMixin:
        """Stand-in for `tests/exporters/test_export.py` (not in the sdist): export is tested by this file's own
        tests below (static shapes, a dynamic batch, mixed batches, fullgraph compile, ONNX)."""

    class GenerationTesterMixin:
        """Stand-in for `tests/generation/test_utils.py` (not in the sdist): Aesformer does not generate."""

    _module(f"{PACKAGE}.exporters")
    _module(f"{PACKAGE}.exporters.test_export", ExportTesterMixin=ExportTesterMixin)
    _module(f"{PACKAGE}.generation")
    _module(f"{PACKAGE}.generation.test_utils", GenerationTesterMixin=GenerationTesterMixin)
    _module(f"{PACKAGE}.utils")
    # Only read by ConfigTester.check_config_arguments_init, which returns early for composite configs like ours.
    _module(f"{PACKAGE}.utils.test_configuration_utils",
            config_common_kwargs={"return_dict": False, "output_hidden_states": True, "output_attentions": True})
    fetcher = types.ModuleType("fetch_hub_objects_for_ci")
    fetcher.url_to_local_path = _local_image_path
    sys.modules.setdefault("fetch_hub_objects_for_ci", fetcher)


def _import_common(name: str):
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(_common_tests_dir())]
        sys.modules[PACKAGE] = package
        _install_stand_ins()
    return importlib.import_module(f"{PACKAGE}.{name}")


try:
    import parameterized  # noqa: F401  (the common testers use it)
except ImportError:  # pragma: no cover
    pytest.skip("the common testers need `parameterized` (test extra)", allow_module_level=True)

_modeling_common = _import_common("test_modeling_common")
_configuration_common = _import_common("test_configuration_common")
_image_processing_common = _import_common("test_image_processing_common")
_processing_common = _import_common("test_processing_common")

ModelTesterMixin = _modeling_common.ModelTesterMixin
ConfigTester = _configuration_common.ConfigTester
ImageProcessingTestMixin = _image_processing_common.ImageProcessingTestMixin
ImageProcessingTester = _image_processing_common.ImageProcessingTester
ProcessorTesterMixin = _processing_common.ProcessorTesterMixin
floats_tensor = _modeling_common.floats_tensor
ids_tensor = _modeling_common.ids_tensor


# ---------------------------------------------------------------------------------------------------- model + config
class AesformerModelTester:
    """The tiny preset (64-wide fusion, 32-px images); a batch of 3 where the last sample has no comments, so every
    common test sees both branches."""

    def __init__(self, parent, batch_size=3, seq_length=7, image_size=32, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.image_size = image_size
        self.is_training = is_training
        config = self.get_config()
        self.vision_config = config.vision_config
        self.text_config = config.text_config
        self.hidden_size = config.hidden_size
        self.num_hidden_layers = config.num_fusion_layers
        self.num_attention_heads = config.text_config.num_attention_heads
        # The fusion stack's sequence (`AesformerOutput.hidden_states` / `attentions`): the longer of the rows with
        # comments (the last Swin stage's 2 x 2 grid + the comment) and the image-only row (4 scales x 2 x 2).
        grid = token_grid(config, (image_size, image_size))
        grid_tokens = grid[0] * grid[1]
        self.encoder_seq_length = max(grid_tokens + seq_length, len(config.vision_config.depths) * grid_tokens)

    def get_config(self):
        return AesformerConfig.from_preset("tiny")

    def prepare_config_and_inputs(self):
        config = self.get_config()
        pixel_values = floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        input_ids = ids_tensor([self.batch_size, self.seq_length], config.text_config.vocab_size)
        attention_mask = torch.ones(self.batch_size, self.seq_length, dtype=torch.long)
        attention_mask[0, self.seq_length - 2:] = 0  # padding
        attention_mask[-1] = 0  # no comments: image-only branch
        return config, pixel_values, input_ids, attention_mask

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, input_ids, attention_mask = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}

    @property
    def vision_model_tester(self):
        """For the `get_image_features` tests (as CLIP's): Swin's attentions come one per block."""
        return _TowerTester(self, "pixel_values", num_hidden_layers=sum(self.vision_config.depths))

    @property
    def text_model_tester(self):
        """For the `get_text_features` tests: BERT's layers."""
        return _TowerTester(self, "input_ids", num_hidden_layers=self.text_config.num_hidden_layers)


class _TowerTester:
    def __init__(self, parent, main_input, num_hidden_layers):
        self.parent, self.main_input, self.num_hidden_layers = parent, main_input, num_hidden_layers

    def prepare_config_and_inputs_for_common(self):
        config, inputs = self.parent.prepare_config_and_inputs_for_common()
        keep = ("pixel_values",) if self.main_input == "pixel_values" else ("input_ids", "attention_mask")
        return config, {k: v for k, v in inputs.items() if k in keep}


class AesformerModelTest(ModelTesterMixin, unittest.TestCase):
    all_model_classes = (AesformerModel,)
    pipeline_model_mapping = {}
    # A scorer, not a language model: its text tower's word embeddings are reachable (get/set_input_embeddings), but
    # there are no output embeddings and nothing is tied, so there is nothing for resize_token_embeddings to keep in
    # step; resizing is BERT's own (tested by transformers' BERT tests).
    test_resize_embeddings = False
    # Swin's width grows per stage: the common shape check reads `vision_config.embed_dim` (the first stage's width)
    # while the image features are the last stage's tokens. The shapes are checked in test_transformers_integration.
    skip_test_image_features_output_shape = True

    def setUp(self):
        self.model_tester = AesformerModelTester(self)
        self.config_tester = ConfigTester(self, config_class=AesformerConfig, has_text_modality=False,
                                          common_properties=["hidden_size", "num_fusion_layers"],
                                          num_fusion_layers=1, num_score_bins=7, score_threshold=4.0)

    def test_config(self):
        self.config_tester.run_common_tests()

    # ------------------------------------------------------------------ turned off, with the reason
    @unittest.skip("transformers' SwinModel.get_input_embeddings() is its patch embedding, which returns a tuple: "
                   "enable_input_require_grads() fails on SwinModel alone the same way")
    def test_enable_input_require_grads_with_gradient_checkpointing(self):
        pass

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=return_labels)
        if return_labels:  # vote counts over the score bins, as the training data gives them; the same on every
            # call (the common tests prepare the inputs of the two calls they compare separately)
            config = self.model_tester.get_config()
            votes = torch.rand(self.model_tester.batch_size, config.num_score_bins,
                               generator=torch.Generator().manual_seed(0))
            inputs_dict["labels"] = votes + 0.1
        return inputs_dict


# ---------------------------------------------------------------------------------------------------- image processor
class AesformerImageProcessingTester(ImageProcessingTester):
    def __init__(self, parent, **kwargs):
        kwargs.setdefault("size", {"height": 20, "width": 20})
        kwargs.setdefault("do_resize", True)
        kwargs.setdefault("do_normalize", True)
        kwargs.setdefault("image_mean", [0.5, 0.5, 0.5])
        kwargs.setdefault("image_std", [0.5, 0.5, 0.5])
        super().__init__(parent, batch_size=4, min_resolution=16, max_resolution=48, **kwargs)

    def _get_image_processing_classes(self):
        # transformers finds them by the test file's folder name (tests/models/<model>/); ours is registered locally.
        return {"pil": AesformerImageProcessor}


class AesformerImageProcessingTest(ImageProcessingTestMixin, unittest.TestCase):
    image_processor_tester_class = AesformerImageProcessingTester

    @unittest.skip("the processor always returns 3-channel RGB (Swin's patch embedding takes 3 channels; alpha is "
                   "composited over `matte_color`), so do_convert_rgb=False is refused with a ValueError; RGBA "
                   "inputs are tested in tests/test_processing.py")
    def test_call_numpy_4_channels(self):
        pass

    @unittest.skip("a numpy + Pillow processor by design: torchvision cannot be installed beside the CPU torch this "
                   "project supports (see ../shared/reference/hf-integration.md from the repository root, 'Versions')")
    def test_new_models_require_torchvision_backend(self):
        pass


# ---------------------------------------------------------------------------------------------------- processor
class AesformerProcessorTest(ProcessorTesterMixin, unittest.TestCase):
    processor_class = AesformerProcessor

    @classmethod
    def _setup_tokenizer(cls):
        from transformers import BertTokenizer

        folder = tempfile.mkdtemp(prefix="aesformer-vocab-")
        vocab = write_toy_vocab(Path(folder) / "vocab.txt", 512)
        tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=False)
        shutil.rmtree(folder, ignore_errors=True)
        return tokenizer

    @classmethod
    def _setup_image_processor(cls):
        return AesformerImageProcessor(size={"height": 20, "width": 20})

    def test_processor_from_and_save_pretrained(self):
        """Adapted: the package registers its classes for the Auto API (`register_for_auto_class`), so a saved
        processor carries `auto_map` (for loading from a Hub folder without the package); the common test compares
        the reloaded dict with the original's, which has no `auto_map` before saving. Same check without it."""
        processor = self.get_processor()
        with tempfile.TemporaryDirectory() as folder:
            processor.save_pretrained(folder)
            reloaded = AesformerProcessor.from_pretrained(folder)
        first, second = processor.to_dict(), reloaded.to_dict()
        for d in (first, second):
            d.pop("auto_map", None)
            d.get("image_processor", {}).pop("auto_map", None)
        self.assertEqual(second, first)
        self.assertEqual(reloaded.max_length, processor.max_length)

    def test_processor_from_and_save_pretrained_as_nested_dict(self):
        """Adapted like `test_processor_from_and_save_pretrained` (the `auto_map` the package adds)."""
        self.test_processor_from_and_save_pretrained()
