"""The Gradio page of `aesformer serve` and of an exported Space: drop photos, see their scores and why.

This file is the page only. It imports the standard library, and gradio / pandas inside functions, never the
`aesformer` package: `aesformer export --space` copies it as is next to the Space's `app.py`, which runs without
the package. The model work is done by a *backend* object, given to [`build_page`]:

- `backend.name` (str): what the page says it serves;
- `backend.adapters` (list of str): "base" first, then the dataset adapters the model carries;
- `backend.default_adapter` (str, optional): the adapter that answers when none is chosen, the model's default
  (the first of `adapters` when the backend has no such attribute);
- `backend.precisions` (list of str): e.g. ["float32", "bfloat16"]; the first is the default;
- `backend.score(image, comments, adapter, precision)`: the dict of `pipeline("image-aesthetics")` for one image
  file (comments: a string or None); raises `ValueError` naming the file when it cannot be scored;
- `backend.analyse(image, comments, adapter, precision)`: the same dict (the same numbers) plus `overlay` (a PIL
  image: the photo under its attention heat map) and, when known, `bin_values` (the score of each bin).

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
TABLE_COLUMNS = ["file", "score", "std", "label", "branch", "adapter", "error"]
CSV_COLUMNS = ["file", "adapter", "score", "std", "label", "branch", "distribution", "comments", "error"]
SCORE_DIGITS = 4  # what the page shows; the CSV and the API keep full precision
API_NAME = "score"
COMMENTS_HEADERS = ["file", "comments"]
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


def _typed_comments(names: Sequence[str], table: Any) -> List[str]:
    """The comments typed for each upload (by position: two uploads may share a file name). Row `i` of the table
    belongs to upload `i` when it names the same file; otherwise (the uploads changed since the table was made) the
    first unused row of the same name, in order; else none ("")."""
    rows = []
    for row in _table_rows(table):
        if len(row) >= 2 and row[0]:
            text = row[1]
            rows.append((str(row[0]), "" if text is None or (isinstance(text, float) and math.isnan(text))
                         else str(text)))
        else:
            rows.append(None)
    used, typed = set(), []
    for i, name in enumerate(names):
        pick = i if i < len(rows) and rows[i] is not None and rows[i][0] == name else next(
            (j for j, row in enumerate(rows) if row is not None and row[0] == name and j not in used
             and not (j < len(names) and names[j] == name)), None)
        if pick is None or pick in used:
            typed.append("")
        else:
            used.add(pick)
            typed.append(rows[pick][1])
    return typed


def comments_rows(files: Any, table: Any = None) -> List[List[str]]:
    """Rows `[file, comments]` of the comments table, one per uploaded file in upload order, keeping the comments
    already typed for each upload."""
    names = [file_name(p) for p in _paths(files)]
    return [[name, text] for name, text in zip(names, _typed_comments(names, table))]


def comments_for_uploads(files: Any, table: Any = None) -> List[Optional[str]]:
    """The comments of each uploaded file, in upload order, from the comments table (blank = no comments: the
    image-only branch)."""
    names = [file_name(p) for p in _paths(files)]
    return [text.strip() or None for text in _typed_comments(names, table)]


def default_adapter(backend) -> str:
    """The adapter that answers when none is chosen: the backend's `default_adapter`, else its first adapter."""
    return getattr(backend, "default_adapter", None) or backend.adapters[0]


def _public_error(error: BaseException, path: str) -> str:
    """The error text with the server's cache path replaced by the uploaded name."""
    return str(error).replace(path, file_name(path))


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
            result = {"adapter": adapter, "error": f"{type(error).__name__}: {_public_error(error, path)}"}
        result.update(file=name, comments=text or "", precision=precision)
        result.setdefault("error", "")
        results.append(result)
    if progress is not None:
        progress(1.0, desc="done")
    return results


def _rounded(value: Any) -> Any:
    return round(float(value), SCORE_DIGITS) if isinstance(value, (int, float)) else None


def results_table(results: Sequence[dict]):
    """The sortable table: one row per file (failed files: the error, no numbers)."""
    import pandas as pd

    rows = [{"file": r["file"], "score": _rounded(r.get("score")), "std": _rounded(r.get("std")),
             "label": r.get("label", ""), "branch": r.get("branch", ""), "adapter": r.get("adapter", ""),
             "error": r.get("error", "")} for r in results]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


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
            writer.writerow(row)
    return path


def summary_text(result: Optional[dict]) -> str:
    """One image's verdict in Markdown: score, std, label, branch, adapter (or its error)."""
    if not result:
        return "Upload images and press **Score**."
    if result.get("error"):
        return f"**{result['file']}**: could not be scored: {result['error']}"
    branch = {"with_comments": "with comments", "image_only": "image only"}.get(result["branch"], result["branch"])
    return (f"**{result['file']}**: score **{result['score']:.{SCORE_DIGITS}f}** "
            f"± {result['std']:.{SCORE_DIGITS}f} (std), label **{result['label']}**, {branch} branch, "
            f"adapter `{result['adapter']}`, {result.get('precision', '')}")


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


def build_page(backend, max_files: int = MAX_FILES, max_file_size: str = MAX_FILE_SIZE, title: str = "Aesformer"):
    """The `gr.Blocks` page for `backend` (not launched: see [`launch_options`])."""
    import gradio as gr

    work_dir = tempfile.mkdtemp(prefix="aesformer-page-")

    def on_upload(files, table):
        return comments_rows(files, table)

    def on_score(files, table, adapter, precision, progress=gr.Progress()):
        try:
            results = analyse_batch(backend, files, table, adapter, precision, max_files=max_files,
                                    progress=progress)
        except ValueError as error:
            raise gr.Error(str(error)) from None
        failed = sum(1 for r in results if r["error"])
        status = f"{len(results) - failed} of {len(results)} image(s) scored" + (
            f"; {failed} could not be read (see the error column)" if failed else "")
        csv_path = write_csv(results, work_dir)  # gradio serves a copy: the next batch may overwrite it
        first = next((r for r in results if not r["error"]), results[0])
        summary, bars, picture = detail(results, first["file"])
        names = [r["file"] for r in results]
        return (status, results_table(results), csv_path, gr.update(choices=names, value=first["file"]),
                summary, bars, picture, results)

    def on_pick(name, results):
        return detail(results, name)

    def on_api(image, comments, adapter):
        try:
            return score_one(backend, image, comments, adapter)
        except ValueError as error:
            raise gr.Error(str(error)) from None

    with gr.Blocks(title=f"{title}: {backend.name}", analytics_enabled=False) as page:
        gr.Markdown(f"# {title}: image aesthetics\nModel: `{backend.name}`. Upload one or many photos (at most "
                    f"{max_files} files of up to {max_file_size.upper()} each); optional comments per photo send it "
                    "through the with-comments branch.")
        results_state = gr.State([])
        with gr.Row():
            with gr.Column(scale=1):
                files = gr.File(file_count="multiple", label="Images", elem_id="images")
                table = gr.Dataframe(headers=COMMENTS_HEADERS, datatype=["str", "str"], interactive=True,
                                     static_columns=[0], label="Comments (optional, one row per image)",
                                     elem_id="comments", column_count=2)
                adapter = gr.Dropdown(choices=list(backend.adapters), value=default_adapter(backend),
                                      label="Adapter", elem_id="adapter")
                precision = gr.Radio(choices=list(backend.precisions), value=backend.precisions[0],
                                     label="Precision", elem_id="precision")
                button = gr.Button("Score", variant="primary", elem_id="score-button")
            with gr.Column(scale=2):
                status = gr.Markdown("", elem_id="status")
                scores = gr.Dataframe(headers=TABLE_COLUMNS, interactive=False, label="Scores (click a header to "
                                      "sort)", elem_id="results")
                download = gr.File(label="CSV", elem_id="csv", interactive=False)
                pick = gr.Dropdown(choices=[], label="Image", elem_id="pick", interactive=True)
                summary = gr.Markdown(summary_text(None), elem_id="summary")
                with gr.Row():
                    chart = gr.BarPlot(distribution_frame(None), x="score bin", y="probability", y_lim=[0, None],
                                       sort=BIN_ORDER,
                                       label="Predicted distribution", elem_id="distribution")
                    picture = gr.Image(label="Attention overlay", elem_id="overlay", type="pil",
                                       interactive=False)
        # The programmatic endpoint: `Client(url).predict(image=handle_file(path), comments="", adapter="base",
        # api_name="/score")` (adapter "": the default adapter). Its inputs are not part of the page.
        with gr.Column(visible=False):
            api_image = gr.File(label="image")
            api_comments = gr.Textbox(label="comments")
            api_adapter = gr.Textbox(label="adapter", value=default_adapter(backend))
            api_result = gr.JSON(label="result")
            api_button = gr.Button("score")

        files.change(on_upload, [files, table], table, api_visibility="private")
        button.click(on_score, [files, table, adapter, precision],
                     [status, scores, download, pick, summary, chart, picture, results_state],
                     api_visibility="private")
        pick.input(on_pick, [pick, results_state], [summary, chart, picture], api_visibility="private")
        api_button.click(on_api, [api_image, api_comments, api_adapter], api_result, api_name=API_NAME)
    page.queue(default_concurrency_limit=1)
    return page


def launch_options(host: str = "127.0.0.1", port: Optional[int] = None, max_file_size: str = MAX_FILE_SIZE) -> dict:
    """Keyword arguments of `page.launch(...)`: the address, the upload cap, no SSR (no Node server), system
    fonts, no share link."""
    return {"server_name": host, "server_port": port, "max_file_size": max_file_size, "ssr_mode": False,
            "share": False, "theme": theme(), "show_error": True}


__all__ = [
    "API_NAME", "MAX_FILES", "MAX_FILE_SIZE", "TABLE_COLUMNS", "analyse_batch", "build_page", "check_batch",
    "comments_for_uploads", "comments_rows", "default_adapter", "detail", "distribution_frame", "file_name",
    "launch_options",
    "results_table", "score_one", "summary_text", "write_csv",
]
