"""`aesformer serve`: the interactive page (and the named `score` API) for one model folder.

    aesformer serve --model DIR [--host 127.0.0.1] [--port N] [--max-files 64] [--max-file-size 20mb]

The page itself is `app_page.py` (gradio, no package imports, also shipped in Spaces). This module is its backend
with the package: the model and processor loaded from DIR (safetensors only), the dataset adapters of
`DIR/adapters/` (with `peft`), one model copy per precision, scores from the scoring module
(`modeling_aesformer.scoring`, the path of `aesformer score`) and the attention overlay from
`modeling_aesformer.explanation`. The Space folder of `aesformer export --space` is written by
`modeling_aesformer.export.write_space`. gradio is imported only when a page is built (`pip install "aesformer[app]"`).
"""

import argparse
import os
import threading
from pathlib import Path
from typing import Optional, Union

from .common import command_entry

APP_HINT = 'the page needs gradio: pip install "aesformer[app]"'
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
OVERLAY_SIDE = 1024  # longest side of the attention overlay shown on the page


class _CastingProcessor:
    """The processor, with `pixel_values` in the model's dtype (the explain code feeds the processor's output to
    the model as is; the pipeline casts by itself)."""

    def __init__(self, processor, dtype):
        self._processor, self._dtype = processor, dtype

    def __getattr__(self, name):
        return getattr(self._processor, name)

    def __call__(self, *args, **kwargs):
        out = self._processor(*args, **kwargs)
        out["pixel_values"] = out["pixel_values"].to(self._dtype)
        return out


class ModelBackend:
    """One model folder, served: scores through the scoring module (`modeling_aesformer.scoring`, as `aesformer
    score` reads files), overlays through `explain`. Without an adapter named, the model's default adapter answers
    (as the pipeline, `aesformer score` and `explain` do).

    Model copies per precision are loaded on first use and kept; one lock serialises the forwards (adapters are
    switched in place, and `explain` sets eval mode)."""

    def __init__(self, model_dir: Union[str, os.PathLike], device: Optional[str] = None, log=print):
        import torch

        import modeling_aesformer  # noqa: F401 - registers the Auto classes

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_dir} is not a model folder (no config.json): pass --model DIR")
        self.name = model_name(self.model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
        if self.device.startswith("cuda"):
            self._dtypes["float16"] = torch.float16
        self.precisions = list(self._dtypes)
        from modeling_aesformer.adapter_weights_aesformer import BASE_ADAPTER
        from modeling_aesformer.adapters import list_adapters

        names = list_adapters(self.model_dir)
        if names:
            try:
                import peft  # noqa: F401
            except ImportError:
                log(f"[serve] warning: {self.model_dir}/adapters/ holds {names}, but peft is not installed: only "
                    'the base model is served (pip install "aesformer[train]")')
                names = []
        self._adapter_names = names
        self.adapters = [BASE_ADAPTER] + names
        self._loaded = {}
        self._lock = threading.Lock()
        model, _, _ = self._loaded_for(self.precisions[0])  # a folder that cannot load fails here, before the page
        from modeling_aesformer.pipeline_aesformer import resolve_adapters

        self.default_adapter = resolve_adapters(model, None)[0][0]  # what answers when no adapter is named
        self._scales = {}

    def _loaded_for(self, precision: str):
        if precision not in self._dtypes:
            raise ValueError(f"unknown precision {precision!r}; choose one of {self.precisions}")
        if precision not in self._loaded:
            from modeling_aesformer.loading import load_model

            model, processor, _ = load_model(self.model_dir, self._adapter_names or None,
                                             dtype=self._dtypes[precision], device=self.device)
            self._loaded[precision] = (model, processor, _CastingProcessor(processor, self._dtypes[precision]))
        return self._loaded[precision]

    def score(self, image, comments=None, adapter=None, precision="float32") -> dict:
        """The pipeline's dict for one image file (`score`, `std`, `label`, `distribution`, `branch`, `adapter`,
        `trained`, `num_bins`, `score_range`), from the scoring module; `adapter=None`: the default adapter.
        Raises `ValueError` naming the file when it cannot be scored."""
        from modeling_aesformer.scoring import score_files

        with self._lock:
            model, processor, _ = self._loaded_for(precision)
            # the whole file, as the pipeline reads it: the page shows the file's own numbers
            [row] = score_files(model, processor, [(image, comments)], adapter=adapter or self.default_adapter,
                                device=self.device, reduced_decode=False)
        if row["error"]:
            raise ValueError(f"{image}: {row['error']}")
        return {k: v for k, v in row.items() if k not in ("path", "index", "error", "comments_truncated")}

    def scale(self, adapter: Optional[str]) -> dict:
        """`{"score_range", "threshold", "trained"}` of the head that answers an image without comments with
        `adapter` (`None`: an image with comments), as the scoring module reports it for a plain grey image."""
        if adapter not in self._scales:
            import PIL.Image

            from modeling_aesformer.scoring import score_files

            with self._lock:
                model, processor, _ = self._loaded_for(self.precisions[0])
                grey = PIL.Image.new("RGB", (64, 64), (128, 128, 128))
                [row] = score_files(model, processor, [(grey, None if adapter else "a photo")],
                                    adapter=adapter or self.default_adapter, device=self.device)
            self._scales[adapter] = {k: row[k] for k in ("score_range", "threshold", "trained")}
        return self._scales[adapter]

    def analyse(self, image, comments=None, adapter=None, precision="float32") -> dict:
        """The pipeline's dict plus `overlay` (photo under its attention heat map) and `bin_values`."""
        import PIL.Image
        import PIL.ImageOps

        from modeling_aesformer.explanation import explain

        result = self.score(image, comments, adapter, precision)  # reads the file first: bad files end here
        # The overlay is for a screen: from a copy at most OVERLAY_SIDE pixels a side (a 50-megapixel upload would
        # otherwise cost gigabytes of heat map). The numbers above come from the file itself.
        with PIL.Image.open(image) as opened:
            opened.draft("RGB", (OVERLAY_SIDE, OVERLAY_SIDE))  # JPEG: decode at a reduced scale
            photo = PIL.ImageOps.exif_transpose(opened)
        photo.thumbnail((OVERLAY_SIDE, OVERLAY_SIDE))
        with self._lock:
            model, _, processor = self._loaded_for(precision)
            found = explain(model, processor, photo, comments=comments, adapter=adapter or self.default_adapter)
        result["overlay"] = found.overlay
        result["bin_values"] = [float(v) for v in found.bin_values]
        return result


def model_name(model_dir: Path) -> str:
    """What the page calls the model: the name in its model card (`model-index`, else the card's title), else the
    folder's path as given (every stage-1 folder's base name is `model`)."""
    card = model_dir / "README.md"
    if card.is_file():
        text = card.read_text(encoding="utf-8", errors="replace")
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("- name:") and "model-index:" in text.split(line)[0]:
                return stripped[len("- name:"):].strip().strip("'\"")
            if stripped.startswith("# "):
                return stripped[2:].strip()
    return str(model_dir)


# ---------------------------------------------------------------------------------------------------------- serve
def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


def exposure_warning(host: str, port: Optional[int]) -> Optional[str]:
    """The warning printed when the page listens beyond this machine, or None on loopback."""
    if is_loopback(host):
        return None
    return (f"WARNING: --host {host} serves the page to every machine that can reach this one on port "
            f"{port or 'gradio picks'}: anyone there can upload files and run the model, and there is no login. "
            "Use --host 127.0.0.1 (the default) unless that is what you want.")


PAGE_FILES_CHECK_S, PAGE_FILES_MAX_AGE_S = 300, 900  # the page's temporary files: checked every 5 min, kept 15


def serve(model_dir, host: str = "127.0.0.1", port: Optional[int] = None, max_files: Optional[int] = None,
          max_file_size: Optional[str] = None, block: bool = True, log=print):
    """Load the model, build the page and launch it. Returns `(page, url)` (with `block=False`, the server runs in
    a thread: `page.close()` stops it)."""
    try:
        import gradio  # noqa: F401
    except ImportError as err:
        raise ImportError(APP_HINT) from err
    from . import app_page

    max_files = max_files or app_page.MAX_FILES
    max_file_size = max_file_size or app_page.MAX_FILE_SIZE
    warning = exposure_warning(host, port)
    if warning:
        log(warning)
    backend = ModelBackend(model_dir, log=log)
    page = app_page.build_page(backend, max_files=max_files, max_file_size=max_file_size, log=log)
    # uploads and result files: deleted PAGE_FILES_MAX_AGE_S after they were made, and all at shutdown (gradio)
    page.delete_cache = page.delete_cache or (PAGE_FILES_CHECK_S, PAGE_FILES_MAX_AGE_S)
    _, url, _ = page.launch(prevent_thread_lock=True, quiet=True,
                            **app_page.launch_options(host, port, max_file_size))
    log(f"[serve] {backend.name}: {url} (adapters: {', '.join(backend.adapters)}; Ctrl-C stops)")
    if block:
        try:
            page.block_thread()
        finally:
            page.close()
    return page, url


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `serve --model DIR [--host] [--port] [--max-files] [--max-file-size]` (imports nothing heavy)."""
    parser = subparsers.add_parser(
        "serve", help="a web page (and a `score` API) to score photos with one model",
        description="Start the Gradio page for the model in DIR: upload photos, optional comments, pick an adapter "
        "and a precision; see score, std, label, distribution, branch and attention overlay; download the table "
        "as CSV. The page also answers `gradio_client` calls to /score. Needs gradio: "
        'pip install "aesformer[app]".',
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="the model folder to serve (the only one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; another address exposes "
                        "the page to the network and prints a warning)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860 or the next free)")
    parser.add_argument("--max-files", type=int, default=None, help="most files per batch (default 64)")
    parser.add_argument("--max-file-size", default=None, help="largest upload, e.g. 20mb (the default)")
    parser.set_defaults(func=run)
    return parser


@command_entry
def run(args) -> int:
    """Entry point of `aesformer serve`: blocks until Ctrl-C (then 0); 2 on an error (one line on stderr)."""
    try:
        serve(args.model, host=args.host, port=args.port, max_files=args.max_files,
              max_file_size=args.max_file_size)
    except KeyboardInterrupt:
        return 0
    return 0


__all__ = ["ModelBackend", "add_subparser", "exposure_warning", "model_name", "run", "serve"]
