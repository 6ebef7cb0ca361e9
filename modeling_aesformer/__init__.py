"""Aesformer: image aesthetic assessment, Hugging Face native.

Importing this package registers the Aesformer classes with transformers' Auto classes, so
`AutoModel.from_pretrained(folder)` / `AutoProcessor.from_pretrained(folder)` work without `trust_remote_code`, and
the `image-aesthetics` task, so `pipeline("image-aesthetics", model=...)` works; nothing else. Heavy optional
libraries (peft, evaluate, datasets) stay off this import path.
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

# pipeline("image-aesthetics"): importing pipeline_aesformer imports transformers.pipelines (cheap once transformers'
# model classes are loaded, as they are here) and registers the task.
from .pipeline_aesformer import AesformerAestheticsPipeline, register_pipeline  # noqa: E402

register_pipeline()

__all__ = [
    "AesformerAestheticsPipeline",
    "AesformerConfig",
    "AesformerImageProcessor",
    "AesformerModel",
    "AesformerOutput",
    "AesformerPreTrainedModel",
    "AesformerProcessor",
    "clean_comments",
    "earth_movers_distance",
    "register_pipeline",
]
