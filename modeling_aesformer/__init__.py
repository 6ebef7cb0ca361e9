"""Aesformer: image aesthetic assessment, Hugging Face native.

Importing this package registers the Aesformer classes with transformers' Auto classes, so
`AutoModel.from_pretrained(folder)` / `AutoProcessor.from_pretrained(folder)` work without `trust_remote_code`.
Heavy optional libraries (peft, evaluate, datasets, accelerate, transformers.pipelines) stay off this import path.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from aesformer_processing import AesformerImageProcessor, AesformerProcessor, clean_comments

from .configuration_aesformer import AesformerConfig
from .modeling_aesformer import AesformerModel, AesformerOutput, AesformerPreTrainedModel, earth_movers_distance

__version__ = "0.1.0"


def _register() -> None:
    AutoConfig.register(AesformerConfig.model_type, AesformerConfig, exist_ok=True)
    AutoModel.register(AesformerConfig, AesformerModel, exist_ok=True)
    AutoImageProcessor.register(
        AesformerConfig, image_processor_classes={"pil": AesformerImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(AesformerConfig, AesformerProcessor, exist_ok=True)
    # save_pretrained then copies the defining files and writes `auto_map`, for loading without the package.
    AesformerConfig.register_for_auto_class()
    AesformerModel.register_for_auto_class("AutoModel")
    AesformerImageProcessor.register_for_auto_class("AutoImageProcessor")
    AesformerProcessor.register_for_auto_class("AutoProcessor")


_register()

# The eval fast path (package only, not shipped to the Hub): see fast_inference.py.
from .fast_inference import install as _install_fast_path  # noqa: E402

_install_fast_path()

__all__ = [
    "AesformerConfig",
    "AesformerImageProcessor",
    "AesformerModel",
    "AesformerOutput",
    "AesformerPreTrainedModel",
    "AesformerProcessor",
    "clean_comments",
    "earth_movers_distance",
]

# --- pipeline("image-aesthetics") --------------------------------------------------------------------------------
# Registered lazily: transformers.pipelines is heavy and stays off this import path. The hook registers the task
# right after transformers.pipelines is first imported (see pipeline_registration.py).
from .pipeline_registration import install as _install_pipeline_hook  # noqa: E402
from .pipeline_registration import register_pipeline  # noqa: E402

_install_pipeline_hook()


def __getattr__(name):
    if name == "AesformerAestheticsPipeline":
        return register_pipeline()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
