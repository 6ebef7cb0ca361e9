"""The Gradio page of `aesformer serve` and of an exported Space: drop photos, see their scores and why.

This file is the page only. It imports the standard library, and gradio / pandas inside functions, never the
`aesformer` package: `aesformer export --space` copies it as is next to the Space's `app.py`, which runs without
the package. The model work is done by a *backend* object, given to [`build_page`]:

- `backend.name` (str): what the page says it serves (the model card's name, or the folder's path);
- `backend.adapters` (list of str): "base" first, then the dataset adapters the model carries;
- `backend.default_adapter` (str, optional): the adapter that answers when none is chosen, the model's default
  (the first of `adapters` when the backend has no such attribute);
- `backend.precisions` (list of str): e.g. ["float32", "bfloat16"]; the first is the default;
- `backend.score(image, comments, adapter, precision)`: the dict of `pipeline("image-aesthetics")` for one image
  file (comments: a string or None); raises `ValueError` naming the file when it cannot be scored;
- `backend.analyse(image, comments, adapter, precision)`: the same dict (the same numbers) plus `overlay` (a PIL
  image: the photo under its attention heat map) and, when known, `bin_values` (the score of each bin);
- `backend.scale(adapter)` (optional): `{"score_range", "threshold", "trained"}` of the head that answers images
  without comments with that adapter, and the same for images with comments under `adapter=None`; stated on the
  page before anything is uploaded.

The page serves the one model its backend holds: there is no folder picker, and it never reads a path typed in.
"""

import csv
import math
import os
import tempfile
from typing import Any, Callable, List, Optional, Sequence

# Limits of one request: the page refuses a batch over MAX_FILES before scoring anything, and gradio refuses any
# file over MAX_FILE_SIZE at upload.
MAX_FILES = 64
MAX_FILE_SIZE = "20mb"
TABLE_COLUMNS = ["rank", "file", "score", "std", "label", "threshold", "branch", "adapter", "trained", "error"]
CSV_COLUMNS = ["file", "adapter", "score", "std", "label", "branch", "distribution", "comments", "error", "trained",
               "threshold", "warnings"]
SCORE_DIGITS = 4  # what the page shows; the CSV and the API keep full precision
API_NAME = "score"
COMMENTS_HEADERS = ["file", "comments"]
# The comments table's header cells take no clicks: a double-click would rename a column.
PAGE_CSS = "#comments .header-cell, #comments thead th { pointer-events: none; }"
CHART_AXES = {"x_title": "score bin", "y_title": "probability"}  # stated, so that they stay once bars are drawn
# The bar chart's x order (it would otherwise sort the bin labels as text: 1, 10, 2, ...): every label
# `distribution_frame` writes for bins on a 0..100 scale in steps of 0.5.
BIN_ORDER = [f"{i / 2:g}" for i in range(201)]


# -------------------------------------------------------------------------------------------- pure functions
def file_name(path: Any) -> str:
    """The name a person uploaded a file under (gradio keeps it as the base name of its cached copy)."""
    if isinstance(path, dict):  # a FileData dict
        path = path.get("path") or path.get("name") or ""
    return os.path.basename(str(getattr(path, "name", path)))


def _paths(files: Any) -> List[str]:
    if not files:
        return []
    if isinstance(files, (str, os.PathLike, dict)):
        files = [files]
    out = []
    for item in files:
        if isinstance(item, dict):
            item = item.get("path") or item.get("name")
        out.append(os.fspath(getattr(item, "name", item)))
    return out


def check_batch(files: Any, max_files: int = MAX_FILES) -> List[str]:
    """The uploaded paths, or `ValueError` when there are none or more than `max_files` (nothing is scored then)."""
    paths = _paths(files)
    if not paths:
        raise ValueError("no images: upload one or more image files first")
    if len(paths) > max_files:
        raise ValueError(f"{len(paths)} files uploaded; this page scores at most {max_files} per batch. "
                         "Split the batch, or score a folder with `aesformer score`.")
    return paths


def _table_rows(table: Any) -> List[List[Any]]:
    if table is None:
        return []
    if hasattr(table, "values") and hasattr(table, "columns"):  # a pandas DataFrame
        return [list(row) for row in table.values.tolist()]
    if isinstance(table, dict) and "data" in table:
        return [list(row) for row in table["data"]]
    return [list(row) for row in table]


def _cell_text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _typed_comments(count: int, table: Any) -> List[str]:
    """The comments column of the table, row `i` for upload `i` (by position, never by file name: two uploads may
    share one), padded with "" to `count` rows."""
    texts = [_cell_text(row[1]) if len(row) >= 2 else "" for row in _table_rows(table)]
    return (texts + [""] * count)[:count]


def comments_rows(files: Any, table: Any = None, table_uploads: Optional[Sequence[Any]] = None) -> List[List[str]]:
    """Rows `[file, comments]` of the comments table, one per upload in upload order. `table_uploads`: the uploads
    the table's rows were made for (the page keeps them); each upload then keeps the comments typed in its own row,
    wherever it moved, as gradio gives every upload its own path. Without it, row `i` belongs to upload `i`."""
    paths = _paths(files)
    if table_uploads is None:
        texts = _typed_comments(len(paths), table)
    else:
        before = _paths(table_uploads)
        typed = dict(zip(before, _typed_comments(len(before), table)))
        texts = [typed.get(path, "") for path in paths]
    return [[file_name(path), text] for path, text in zip(paths, texts)]


def comments_for_uploads(files: Any, table: Any = None) -> List[Optional[str]]:
    """The comments of each upload, in upload order, from the comments table made for these uploads (row `i`:
    upload `i`; blank = no comments: the image-only branch)."""
    return [text.strip() or None for text in _typed_comments(len(_paths(files)), table)]


def default_adapter(backend) -> str:
    """The adapter that answers when none is chosen: the backend's `default_adapter`, else its first adapter."""
    return getattr(backend, "default_adapter", None) or backend.adapters[0]


def _public_error(error: BaseException, path: str) -> str:
    """The error text with the server's cache path replaced by the uploaded name."""
    return str(error).replace(path, file_name(path))


def _row_error(error: BaseException, path: str) -> str:
    """The error of one upload's row: the text a score file holds for the same failure (the backend's message,
    without the file's name, which the row already shows); an unexpected error type is named."""
    text = _public_error(error, path)
    name = file_name(path)
    if text.startswith(f"{name}: "):
        text = text[len(name) + 2:]
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def analyse_batch(backend, files: Any, table: Any = None, adapter: Optional[str] = None,
                  precision: Optional[str] = None, max_files: int = MAX_FILES,
                  progress: Optional[Callable] = None) -> List[dict]:
    """Score every uploaded file with its own row of the comments table; one result per file, in upload order.
    A file that cannot be scored gets a result with `error` set (the rest of the batch goes on). `adapter=None`:
    the backend's default adapter. `progress(fraction, desc=...)` is called per file."""
    paths = check_batch(files, max_files)
    adapter = adapter or default_adapter(backend)
    if adapter not in backend.adapters:
        raise ValueError(f"unknown adapter {adapter!r}; this model has {list(backend.adapters)}")
    precision = precision or backend.precisions[0]
    if precision not in backend.precisions:
        raise ValueError(f"unknown precision {precision!r}; this page offers {list(backend.precisions)}")
    comments = comments_for_uploads(paths, table)
    results = []
    for i, (path, text) in enumerate(zip(paths, comments)):
        name = file_name(path)
        if progress is not None:
            progress(i / len(paths), desc=f"scoring {name} ({i + 1}/{len(paths)})")
        try:
            result = dict(backend.analyse(path, text, adapter, precision))
        except (ValueError, TypeError, OSError) as error:
            result = {"adapter": adapter, "error": _row_error(error, path)}
        result.update(file=name, path=path, comments=text or "", precision=precision)
        result.setdefault("error", "")
        results.append(result)
    if progress is not None:
        progress(1.0, desc="done")
    return results


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _rounded(value: Any) -> Any:
    return round(float(value), SCORE_DIGITS) if isinstance(value, (int, float)) else None


def ranked(results: Sequence[dict]) -> List[dict]:
    """The scored results, best first (ties keep upload order); files that could not be scored are left out."""
    scored = [r for r in results or [] if not r.get("error") and r.get("score") is not None]
    return sorted(scored, key=lambda r: -float(r["score"]))


def _trained_text(value: Any) -> str:
    return "" if value is None else ("yes" if value else "NO: the score means nothing")


def results_table(results: Sequence[dict]):
    """The sortable table: one row per upload, in upload order, with its rank by score (failed files: the error,
    no numbers). `trained` says whether training produced the head that answered (empty with comments)."""
    import pandas as pd

    rank = {id(r): i + 1 for i, r in enumerate(ranked(results))}
    rows = [{"rank": rank.get(id(r)), "file": r["file"], "score": _rounded(r.get("score")),
             "std": _rounded(r.get("std")), "label": r.get("label", ""), "threshold": _rounded(r.get("threshold")),
             "branch": r.get("branch", ""), "adapter": r.get("adapter", ""),
             "trained": _trained_text(r.get("trained")), "error": r.get("error", "")} for r in results]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def gallery_items(results: Sequence[dict]) -> List[tuple]:
    """The gallery: `(image file, caption)` per scored upload, best first; the caption holds rank, file, score
    and label."""
    return [(r["path"], f"{i + 1}. {r['file']}: {r['score']:.{SCORE_DIGITS}f} ({r['label']})")
            for i, r in enumerate(ranked(results)) if r.get("path")]


def scale_text(backend, adapter: Optional[str] = None) -> str:
    """The scale and the high/low threshold of the answers, in Markdown (before anything is uploaded)."""
    scale = getattr(backend, "scale", None)
    if scale is None:
        return ""
    adapter = adapter or default_adapter(backend)

    def one(info):
        low, high = info["score_range"]
        return f"scores from {low:g} to {high:g}, **high** when above **{info['threshold']:g}**"

    image_only, with_comments = scale(adapter), scale(None)
    text = f"Images without comments: adapter `{adapter}`, {one(image_only)}"
    if image_only.get("trained") is False:
        text += " (this head was never trained: its scores mean nothing; pick a trained adapter)"
    return text + f". Images with comments: {one(with_comments)}."


def write_csv(results: Sequence[dict], folder: str) -> str:
    """All results, full precision, to `folder/aesformer-scores.csv`; returns the path."""
    import json

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "aesformer-scores.csv")
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for r in results:
            row = {k: r.get(k, "") for k in CSV_COLUMNS}
            row["distribution"] = json.dumps(r["distribution"]) if r.get("distribution") is not None else ""
            row["warnings"] = json.dumps(r.get("warnings") or [])
            row["trained"] = "" if r.get("trained") is None else str(bool(r["trained"])).lower()
            writer.writerow(row)
    return path


def summary_text(result: Optional[dict]) -> str:
    """One image's verdict in Markdown: score, std, label, branch, adapter (or its error)."""
    if not result:
        return "Upload images and press **Score**."
    if result.get("error"):
        return f"**{result['file']}**: could not be scored: {result['error']}"
    branch = {"with_comments": "with comments", "image_only": "image only"}.get(result["branch"], result["branch"])
    text = (f"**{result['file']}**: score **{result['score']:.{SCORE_DIGITS}f}** "
            f"± {result['std']:.{SCORE_DIGITS}f} (std), label **{result['label']}**"
            + (f" (threshold {result['threshold']:g})" if result.get("threshold") is not None else "")
            + f", {branch} branch" + (f", adapter `{result['adapter']}`" if result.get("adapter") else "")
            + f", {result.get('precision', '')} weights, full decode")  # what produced the numbers (as eval)
    if result.get("trained") is not None:
        text += ", trained head" if result["trained"] else ", **untrained head: the score means nothing**"
    for note in result.get("warnings") or []:
        text += f"  \nNote: {note}"
    return text


def distribution_frame(result: Optional[dict]):
    """The predicted distribution as a bar-chart table: one row per score bin."""
    import pandas as pd

    if not result or result.get("error") or not result.get("distribution"):
        return pd.DataFrame({"score bin": pd.Categorical([]), "probability": pd.Series([], dtype=float)})
    probs = [float(p) for p in result["distribution"]]
    values = result.get("bin_values")
    labels = [f"{float(v):g}" for v in values][: len(probs)] if values is not None else []
    if len(labels) != len(probs):
        labels = [str(i + 1) for i in range(len(probs))]
    # Categorical: one bar per bin, in bin order (numbers-as-text would be drawn on a numeric axis).
    return pd.DataFrame({"score bin": pd.Categorical(labels, categories=labels, ordered=True),
                         "probability": probs})


def detail(results: Sequence[dict], name: Optional[str]):
    """(summary, distribution table, overlay) of the result for file `name` (the first one if not found)."""
    chosen = next((r for r in results or [] if r["file"] == name), (results or [None])[0])
    return summary_text(chosen), distribution_frame(chosen), (chosen or {}).get("overlay")


def detail_at(results: Sequence[dict], rank: int):
    """(summary, distribution table, overlay) of the gallery's item `rank` (0 = the best score)."""
    best = ranked(results)
    chosen = best[rank] if 0 <= rank < len(best) else None
    return summary_text(chosen), distribution_frame(chosen), (chosen or {}).get("overlay")


def score_one(backend, image: Any, comments: Optional[str] = "", adapter: Optional[str] = None) -> dict:
    """The `score` API: the `pipeline("image-aesthetics")` dict for one image file (float32); no adapter (or an
    empty one): the backend's default adapter."""
    paths = _paths(image)
    if len(paths) != 1:
        raise ValueError("pass exactly one image file")
    adapter = adapter or default_adapter(backend)
    if adapter not in backend.adapters:
        raise ValueError(f"unknown adapter {adapter!r}; this model has {list(backend.adapters)}")
    try:
        return backend.score(paths[0], (comments or "").strip() or None, adapter, backend.precisions[0])
    except (ValueError, TypeError, OSError) as error:
        raise ValueError(_public_error(error, paths[0])) from error


# ------------------------------------------------------------------------------------------------- the page
def theme():
    """gradio's default look with the system fonts: the page loads nothing from other sites."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def build_page(backend, max_files: int = MAX_FILES, max_file_size: str = MAX_FILE_SIZE, title: str = "Aesformer",
               log: Callable[[str], Any] = print):
    """The `gr.Blocks` page for `backend` (not launched: see [`launch_options`]). A user's error (a broken file,
    an unknown adapter) is shown on the page and logged through `log` in one line, without a traceback."""
    import gradio as gr

    work_dir = tempfile.mkdtemp(prefix="aesformer-page-")

    def user_error(error: BaseException):
        log(f"[page] {error}")
        return gr.Error(str(error), print_exception=False)

    def on_upload(files, table, table_uploads):
        return comments_rows(files, table, table_uploads), _paths(files)

    def on_score(files, table, adapter, precision, progress=gr.Progress()):
        try:
            results = analyse_batch(backend, files, table, adapter, precision, max_files=max_files,
                                    progress=progress)
        except ValueError as error:
            raise user_error(error) from None
        failed = [r for r in results if r["error"]]
        for r in failed:
            log(f"[page] {r['file']}: {r['error']}")
        status = f"{len(results) - len(failed)} of {_count(len(results), 'image')} scored" + (
            f"; {len(failed)} could not be read (see the error column)" if failed else "")
        csv_path = write_csv(results, work_dir)  # gradio serves a copy: the next batch may overwrite it
        summary, bars, picture = with_chart(detail_at(results, 0) if ranked(results) else detail(results, None))
        return (status, results_table(results), csv_path, gradio_gallery(results), summary, bars, picture,
                results)

    def chart_of(frame):
        # the whole component, not only its data: a bare data update drops the axis titles
        return gr.BarPlot(frame, x="score bin", y="probability", y_lim=[0, None], sort=BIN_ORDER, **CHART_AXES)

    def with_chart(view):
        text, frame, overlay = view
        return text, chart_of(frame), overlay

    def gradio_gallery(results):
        return gr.update(value=gallery_items(results), selected_index=0 if ranked(results) else None)

    def on_pick(results, event: gr.SelectData):
        return with_chart(detail_at(results, event.index))

    def on_adapter(adapter):
        return scale_text(backend, adapter)

    def on_api(image, comments, adapter):
        try:
            return score_one(backend, image, comments, adapter)
        except ValueError as error:
            raise user_error(error) from None

    with gr.Blocks(title=f"{title}: {backend.name}", analytics_enabled=False) as page:
        gr.Markdown(f"# {title}: image aesthetics\nModel: `{backend.name}`. Upload one or many photos (at most "
                    f"{max_files} files of up to {max_file_size.upper()} each); optional comments per photo send it "
                    "through the with-comments branch.")
        scale = gr.Markdown(scale_text(backend), elem_id="scale")
        results_state = gr.State([])
        uploads_state = gr.State([])  # the uploads the comments table's rows belong to
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(file_count="multiple", label="Images", elem_id="images")
                table = gr.Dataframe(headers=COMMENTS_HEADERS, datatype=["str", "str"], interactive=True,
                                     static_columns=[0], label="Comments (optional, one row per upload)",
                                     elem_id="comments", column_count=2)
                adapter = gr.Dropdown(choices=list(backend.adapters), value=default_adapter(backend),
                                      label="Adapter", elem_id="adapter")
                precision = gr.Radio(choices=list(backend.precisions), value=backend.precisions[0],
                                     label="Precision", elem_id="precision")
                button = gr.Button("Score", variant="primary", elem_id="score-button")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                gallery = gr.Gallery(label="Ranked by score (click a photo for its details)", elem_id="gallery",
                                     columns=3, fit_columns=False, height=240, allow_preview=False,
                                     object_fit="contain",
                                     interactive=False)
                summary = gr.Markdown(summary_text(None), elem_id="summary")
                with gr.Row():
                    chart = gr.BarPlot(distribution_frame(None), x="score bin", y="probability", y_lim=[0, None],
                                       sort=BIN_ORDER, **CHART_AXES,
                                       label="Predicted distribution", elem_id="distribution")
                    picture = gr.Image(label="Attention overlay", elem_id="overlay", type="pil",
                                       interactive=False)
                scores = gr.Dataframe(value=results_table([]), headers=TABLE_COLUMNS, interactive=False,
                                      label="Scores (click a header to sort)", elem_id="results")
                download = gr.File(label="CSV", elem_id="csv", interactive=False)
        # The programmatic endpoint: `Client(url).predict(image=handle_file(path), comments="", adapter="base",
        # api_name="/score")` (adapter "": the default adapter). Its inputs are not part of the page.
        with gr.Column(visible=False):
            api_image = gr.File(label="image")
            api_comments = gr.Textbox(label="comments")
            api_adapter = gr.Textbox(label="adapter", value=default_adapter(backend))
            api_result = gr.JSON(label="result")
            api_button = gr.Button("score")

        files.change(on_upload, [files, table, uploads_state], [table, uploads_state], api_visibility="private")
        adapter.change(on_adapter, adapter, scale, api_visibility="private")
        button.click(on_score, [files, table, adapter, precision],
                     [status, scores, download, gallery, summary, chart, picture, results_state],
                     api_visibility="private")
        gallery.select(on_pick, results_state, [summary, chart, picture], api_visibility="private")
        api_button.click(on_api, [api_image, api_comments, api_adapter], api_result, api_name=API_NAME)
    page.queue(default_concurrency_limit=1)
    return page


def launch_options(host: str = "127.0.0.1", port: Optional[int] = None, max_file_size: str = MAX_FILE_SIZE) -> dict:
    """Keyword arguments of `page.launch(...)`: the address, the upload cap, no SSR (no Node server), system
    fonts, no share link."""
    return {"server_name": host, "server_port": port, "max_file_size": max_file_size, "ssr_mode": False,
            "share": False, "theme": theme(), "css": PAGE_CSS, "show_error": True}


__all__ = [
    "API_NAME", "MAX_FILES", "MAX_FILE_SIZE", "TABLE_COLUMNS", "analyse_batch", "build_page", "check_batch",
    "comments_for_uploads", "comments_rows", "default_adapter", "detail", "detail_at", "distribution_frame",
    "file_name", "gallery_items", "launch_options", "ranked",
    "results_table", "scale_text", "score_one", "summary_text", "write_csv",
]
