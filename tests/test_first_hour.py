"""What a new user meets in the first hour: every command of the README works as written (on the demo preset),
answers state their threshold and flag small images, and the command line counts and names things right."""

import csv
import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from aesformer_cli.main import main
from modeling_aesformer.toy import draw_scene

from _helpers import free_port, tiny_model_folder

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
SETUP_COMMANDS = ["bash .ci/install && .venv/bin/aesformer demo", "bash .ci/install && .venv/bin/pytest -q"]
# The demo's settings for this test: the `demo` preset and every step of the real run, on 120 images for one epoch
# per stage (the full run takes minutes; `tests/test_demo.py` runs `--quick` end to end).
TINY_DEMO = {"size": 120, "stage1_epochs": 1, "stage2_epochs": 1, "warmup_steps": 2}


def readme_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def shell_commands(block):
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    text = block.replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def test_readme_fits_in_one_sitting_and_keeps_the_two_set_up_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    blocks = [shell_commands(b) for b in readme_blocks("bash")]
    assert blocks[0] == [SETUP_COMMANDS[0]] and blocks[1] == [SETUP_COMMANDS[1]]
    assert ".venv/bin/pytest -q\n" in (REPO / ".ci" / "run").read_text()  # CI runs the README's test command
    for folder in ("processing/", "modeling_aesformer/", "training/", "cli/"):  # the layout table names each package
        assert f"| `{folder}` |" in text
    for where in ("stage1/model", "hub/"):  # where the demo writes
        assert f"`{where}" in text
    assert "runs/stage2/model" not in text
    # every local link points at a file of the repository (docs written by other work items excepted)
    pending = {"docs/trainer.md", "docs/reproduce-ava.md", "docs/backends.md"}
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):
        assert (REPO / target).exists() or target in pending, target


@pytest.mark.slow
def test_every_readme_command_runs_as_written_on_the_demo_preset(tmp_path, monkeypatch, capsys):
    """Each shell and Python block of the README, run in a fresh folder: the demo (on the `demo` preset, fewer
    images), then the quick start against the folders it wrote."""
    import aesformer_training.demo as demo

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "FULL", {**demo.FULL, **TINY_DEMO})
    blocks = [shell_commands(b) for b in readme_blocks("bash")]
    install, program = blocks[0][0].split(" && ")
    assert install == "bash .ci/install" and program == ".venv/bin/aesformer demo"
    assert main(shlex.split(program)[1:]) == 0  # the test suite itself is the second set-up command
    for folder in ("aesformer-demo/stage1/model/adapters/synthetic", "aesformer-demo/hub/config.json",
                   "aesformer-demo/metrics.json", "aesformer-demo/plots/scatter.png"):
        assert (tmp_path / folder).exists(), folder

    later = [command for block in blocks[2:] for command in block]
    assert later, "the README shows no command after the set-up"
    for command in later:
        argv = shlex.split(command)
        assert argv[0] == "aesformer", command
        if argv[1] == "serve":
            check_serve(argv, tmp_path)
            continue
        assert main(argv[1:]) == 0, command
        capsys.readouterr()
    assert (tmp_path / "scores.csv").is_file() and (tmp_path / "why.png").is_file()
    with open(tmp_path / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == TINY_DEMO["size"] and all(row["threshold"] == "5.5" for row in rows)

    for block in readme_blocks("python"):
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102 - the README's own examples


def check_serve(argv, folder):
    """`aesformer serve` runs until stopped: started on a free port, asked for its page, then stopped."""
    port = str(free_port())
    argv = argv[:argv.index("--port") + 1] + [port] + argv[argv.index("--port") + 2:] if "--port" in argv else \
        argv + ["--port", port]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    server = subprocess.Popen([sys.executable, "-m", "aesformer_cli", *argv[1:]], cwd=folder, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, page = time.monotonic() + 240, None
        while time.monotonic() < deadline and page is None:
            assert server.poll() is None, server.stdout.read()
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode()
            except OSError:
                time.sleep(1)
        assert page is not None and "gradio" in page.lower()
    finally:
        server.terminate()
        server.wait(timeout=30)


# ------------------------------------------------------------------------------------- answers explain themselves
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("first-hour") / "model", adapters_scale=0.05)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    draw_scene(3, size=(64, 48)).save(folder / "large.png")
    draw_scene(4, size=(16, 16)).save(folder / "tiny.png")  # below the tiny model's 32-pixel input side
    return folder


def test_the_pipeline_states_its_threshold_and_flags_small_images(model_dir, photos):
    from transformers import AutoModel, pipeline

    import modeling_aesformer  # noqa: F401
    from modeling_aesformer.adapters import load_adapters

    scorer = pipeline("image-aesthetics", model=load_adapters(AutoModel.from_pretrained(model_dir), model_dir))
    large, tiny = scorer([str(photos / "large.png"), str(photos / "tiny.png")], adapter="ava")
    for result in (large, tiny):
        assert result["threshold"] == 5.0  # the AVA adapter's own
        assert result["label"] == ("high" if result["score"] > result["threshold"] else "low")
    assert large["warnings"] == []
    assert len(tiny["warnings"]) == 1 and "16x16" in tiny["warnings"][0] and "upscaled" in tiny["warnings"][0]
    chosen = scorer(str(photos / "large.png"), adapter="ava", threshold=large["score"] - 0.01)
    assert chosen["threshold"] == pytest.approx(large["score"] - 0.01) and chosen["label"] == "high"


def test_score_files_state_the_threshold_and_the_small_image_note(model_dir, photos, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["score", str(photos / "tiny.png"), "--model", str(model_dir), "--output", str(out),
                 "--adapter", "ava", "--num-workers", "0"]) == 0
    printed = capsys.readouterr()
    [row] = list(csv.DictReader(open(out, newline="")))
    assert list(row)[-2:] == ["threshold", "warnings"]  # appended: older columns keep their places
    assert float(row["threshold"]) == 5.0 and "16x16" in json.loads(row["warnings"])[0]
    assert "scored 1 image in" in printed.err + printed.out
    assert "1 image smaller than the model's input side" in printed.err + printed.out
    assert "1 worker" not in printed.err + printed.out  # --num-workers 0
    jsonl = tmp_path / "scores.jsonl"
    assert main(["score", str(photos / "large.png"), "--model", str(model_dir), "--output", str(jsonl),
                 "--adapter", "ava", "--num-workers", "0"]) == 0
    record = json.loads(jsonl.read_text().splitlines()[0])
    assert record["threshold"] == 5.0 and record["warnings"] == []


def test_adapter_all_does_not_warn_about_what_was_asked_for(model_dir, photos, tmp_path, capsys):
    assert main(["score", str(photos / "large.png"), "--model", str(model_dir), "--output",
                 str(tmp_path / "all.csv"), "--adapter", "all", "--num-workers", "0"]) == 0
    printed = capsys.readouterr()
    assert "warning" not in (printed.err + printed.out).lower()
    assert "scored 1 image in" in printed.err + printed.out


def test_untrained_default_answer_names_the_cli_flag(tmp_path, photos, capsys):
    bare = tiny_model_folder(tmp_path / "bare")  # no adapters: the untrained base head answers by default
    assert main(["score", str(photos / "large.png"), "--model", str(bare), "--output", str(tmp_path / "s.csv"),
                 "--num-workers", "0"]) == 0
    printed = capsys.readouterr()
    text = " ".join((printed.out + printed.err).split())
    assert "warning" in text and "adapter=" not in text


def test_score_help_lists_every_output_format(capsys):
    with pytest.raises(SystemExit):
        main(["score", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ".csv, .jsonl or .parquet" in text


# ------------------------------------------------------------------------------------------------ explain figures
@pytest.mark.parametrize("comments", [None, "lovely light on the harbour, the horizon sits a little low " * 3])
def test_explain_figure_clips_no_text(model_dir, photos, tmp_path, monkeypatch, comments):
    """Every text of the `aesformer explain` figure (titles, axis labels, ticks, colour bar, comment words) lies
    inside the figure, for both branches and a long adapter name."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from matplotlib.text import Text
    from transformers import AutoModel, AutoProcessor

    from modeling_aesformer.adapters import load_adapters
    from modeling_aesformer.explanation import explain, plot_explanation

    drawn = []
    save = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (drawn.append(self), save(self, *a, **k))[1])
    model = load_adapters(AutoModel.from_pretrained(model_dir), model_dir).eval()
    explanation = explain(model, AutoProcessor.from_pretrained(model_dir), Image.open(photos / "large.png"),
                          comments=comments, adapter="photonet")
    explanation.adapter = "photonet-2026-a-long-adapter-name"
    plot_explanation(explanation, tmp_path / "why.png")
    [figure] = drawn
    renderer = figure.canvas.get_renderer()
    box = figure.bbox

    def inside(extent, what):
        assert (extent.x0 >= box.x0 - 0.5 and extent.x1 <= box.x1 + 0.5 and extent.y0 >= box.y0 - 0.5
                and extent.y1 <= box.y1 + 0.5), (what, extent, box)

    # each text drawn by itself: titles, the comment's words, figure texts
    texts = list(figure.texts)
    for ax in figure.axes:
        texts += [ax.title, ax._left_title, ax._right_title] + list(ax.texts)  # noqa: SLF001 - the 3 title slots
        if ax.axison:  # tick labels and axis labels, as drawn (an axis switched off draws none)
            texts += [ax.xaxis.label, ax.yaxis.label]
            inside(ax.get_tightbbox(renderer), f"the axes of {ax.get_label() or ax}")
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    assert len(texts) >= 4
    for text in texts:
        inside(text.get_window_extent(renderer), text.get_text())


# ------------------------------------------------------------------------------------------------------ the page
def test_the_page_names_the_model_by_its_card_else_by_its_path(tmp_path):
    from aesformer_cli.serve import model_name

    folder = tmp_path / "stage1" / "model"
    folder.mkdir(parents=True)
    assert model_name(folder) == str(folder)  # not "model", the base name of every stage-1 folder
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nmodel-index:\n- name: my-aesformer\n  results: []\n"
                                      "---\n\n# A title\n")
    assert model_name(folder) == "my-aesformer"
    (folder / "README.md").write_text("# Aesformer for my shoots\n\nText.\n")
    assert model_name(folder) == "Aesformer for my shoots"


def test_a_user_error_on_the_page_is_logged_in_one_line(model_dir, photos, tmp_path, capfd):
    pytest.importorskip("gradio", reason='the page needs gradio: pip install "aesformer[app]"')
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from aesformer_cli.serve import serve

    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    logged = []
    page, url = serve(model_dir, port=free_port(), block=False, log=logged.append)
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="broken.png"):
            client.predict(image=handle_file(str(broken)), comments="", adapter="", api_name="/score")
    finally:
        page.close()
    errors = [line for line in logged if "broken.png" in line]
    assert len(errors) == 1 and "\n" not in errors[0] and "cannot" in errors[0]
    printed = capfd.readouterr()
    assert "Traceback" not in printed.out + printed.err
