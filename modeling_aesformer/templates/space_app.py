"""Hugging Face Space: score photos with the Aesformer model USER/MODEL (written by `aesformer export --space`).

The model repository's own code runs (`trust_remote_code=True`); this Space does not install the aesformer
package. The page is `app_page.py`; this file is its backend: `pipeline("image-aesthetics")` for the numbers, the
pipeline's attention maps (`return_attention=True`) for the overlay. Set AESFORMER_MODEL to serve another
repository or a local folder.
"""

import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers import pipeline
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from app_page import build_page, launch_options

MODEL = os.environ.get("AESFORMER_MODEL", "USER/MODEL")


def _remote(source, name, module="adapter_weights_aesformer"):
    """`name` from the model repository's own code (as `trust_remote_code=True` runs it): by default from
    `adapter_weights_aesformer.py`, the one home of the adapter folder layout."""
    return get_class_from_dynamic_module(f"{module}.{name}", source)


def adapter_names(source):
    """The dataset adapters saved under `adapters/<name>/` of a local folder or a Hub repository."""
    if os.path.isdir(source):
        return _remote(source, "saved_adapters")(source)
    from huggingface_hub import list_repo_files

    return _remote(source, "saved_adapters_in_files")(list_repo_files(source))


def heat_overlay(path, heatmap, alpha=0.5):
    """The photo (upright, RGB) under `heatmap` ([H, W] in 0..1, upsampled bilinearly), blue (little attention)
    to red (most)."""
    with PIL.Image.open(path) as opened:
        opened.draft("RGB", (1024, 1024))  # a screen-sized copy is enough (JPEG: decoded at a reduced scale)
        photo = PIL.ImageOps.exif_transpose(opened).convert("RGB")
    photo.thumbnail((1024, 1024))
    grid = PIL.Image.fromarray(np.asarray(heatmap, dtype=np.float32))
    heat = np.clip(np.asarray(grid.resize(photo.size, PIL.Image.BILINEAR)), 0.0, 1.0)[..., None]
    colour = np.clip(1.5 - np.abs(4 * heat - np.array([3.0, 2.0, 1.0])), 0.0, 1.0) * 255  # a "jet" colour map
    mixed = (1 - alpha) * np.asarray(photo, dtype=np.float32) + alpha * colour
    return PIL.Image.fromarray(mixed.clip(0, 255).astype(np.uint8))


class HubBackend:
    def __init__(self, source):
        self.name = source
        self.precisions = ["float32", "bfloat16"] + (["float16"] if torch.cuda.is_available() else [])
        self._dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
        names = adapter_names(source)
        try:
            import peft  # noqa: F401 - transformers loads the adapters with it
        except ImportError:
            names = []
        self._adapter_names = names
        self._base = _remote(source, "BASE_ADAPTER")
        self.adapters = [self._base] + names
        self._scorers = {}
        resolve_adapters = _remote(source, "resolve_adapters", module="pipeline_aesformer")
        # what answers when no adapter is named: the model's default adapter, as the pipeline and the package page
        self.default_adapter = resolve_adapters(self._scorer(self.precisions[0]).model, None)[0][0]

    def _scorer(self, precision):
        if precision not in self._scorers:
            device = 0 if torch.cuda.is_available() else -1
            self._scorers[precision] = pipeline(
                "image-aesthetics", model=self.name, trust_remote_code=True, dtype=self._dtypes[precision],
                device=device, load_adapters=self._adapter_names or None,
            )
        return self._scorers[precision]

    def score(self, image, comments=None, adapter=None, precision="float32"):
        adapter = adapter or self.default_adapter
        return self._scorer(precision)({"image": image, "comments": comments}, adapter=adapter)

    def analyse(self, image, comments=None, adapter=None, precision="float32"):
        adapter = adapter or self.default_adapter
        scorer = self._scorer(precision)
        # the score of each bin comes with the answer (the scale of the head that answered)
        result = scorer({"image": image, "comments": comments}, adapter=adapter, return_bin_values=True)
        maps = scorer({"image": image, "comments": comments}, adapter=adapter, return_attention=True)
        result["overlay"] = heat_overlay(image, maps["attention_map"])
        return result


# Spaces run `python app.py` and set GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, which gradio reads (host=None).
demo = build_page(HubBackend(MODEL))
demo.launch(**launch_options(host=None))
