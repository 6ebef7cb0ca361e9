"""Helpers shared by several test modules (fixtures live in conftest.py)."""

import argparse
import csv
import json
import os
import pathlib

import numpy as np
import torch

from modeling_aesformer.toy import draw_scene

TOY_WORDS = ["lovely light", "too dark", "sharp subject", "boring composition", "great colour", "blurry"]



def tiny_model(**overrides):
    """The `tiny` preset with seed-0 weights, in eval mode (config fields in `overrides`)."""
    from modeling_aesformer import AesformerConfig, AesformerModel

    torch.manual_seed(0)
    return AesformerModel(AesformerConfig.from_preset("tiny", **overrides)).eval()

def trainable_parameters(model) -> tuple:
    """(trainable, total, fraction) for the active adapter of a PEFT model, as PEFT counts them."""
    trainable, total = model.get_nb_trainable_parameters()
    return trainable, total, trainable / total


def cpu_bf16_flags(cpuinfo_path) -> tuple:
    """The bf16 matrix instructions the cpuinfo file at `cpuinfo_path` announces, as `modeling_aesformer.precision`
    reads them (empty when none, or no such file)."""
    from modeling_aesformer.precision import _CPU_BF16_FLAGS, _cpuinfo

    _, flags = _cpuinfo(str(cpuinfo_path))
    return tuple(flag for flag in _CPU_BF16_FLAGS if flag in flags)


def tiny_model_folder(folder, seed=0, adapters_scale=None, with_tokenizer=True, model=None):
    """A tiny random Aesformer (the `tiny` preset, weights from seed `seed`, or `model` as given) saved in `folder`
    with its processor: 32x32 images and the 512-token toy vocabulary (the saved tokenizer files only). Without
    `with_tokenizer`, the image processor alone, like `aesformer convert-original` without --tokenizer.
    `adapters_scale`: also the "ava" and "photonet" adapters, moved off their initialisation by that scale
    (`add_noisy_adapters`). Returns `folder`."""
    from pathlib import Path

    from transformers import BertTokenizer

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
    from modeling_aesformer.toy import write_toy_vocab

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if model is None:
        torch.manual_seed(seed)
        model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    model.save_pretrained(folder)
    image_processor = AesformerImageProcessor(size={"height": 32, "width": 32})
    if with_tokenizer:
        tokenizer = BertTokenizer(vocab=str(write_toy_vocab(folder / "vocab.txt", 512)), do_lower_case=False)
        (folder / "vocab.txt").unlink()
        AesformerProcessor(image_processor, tokenizer).save_pretrained(folder)
    else:
        image_processor.save_pretrained(folder)
    if adapters_scale is not None:
        add_noisy_adapters(model, folder, scale=adapters_scale)
    return folder


def toy_training_rows():
    """24 rows for `write_generic`: votes centred on a hidden quality that brightness reveals; every fifth row has
    no comments; rows 0-15 train, 16-19 validation, 20-23 test."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        image = draw_scene(i, size=(40, 36))
        quality = 3 + 4 * np.asarray(image).mean() / 255
        votes = np.bincount(np.clip(rng.normal(quality, 1.2, 60).round(), 1, 10).astype(int) - 1, minlength=10)
        comments = [] if i % 5 == 0 else [TOY_WORDS[i % len(TOY_WORDS)], TOY_WORDS[(i * 7) % len(TOY_WORDS)]]
        split = "train" if i < 16 else ("validation" if i < 20 else "test")
        rows.append({"file_name": f"images/{i:03d}.png", "image": image, "votes": votes.tolist(),
                     "comments": comments, "split": split})
    return rows


def add_noisy_adapters(model, folder, scale):
    """Adds the "ava" (10 bins) and "photonet" (7 bins) adapters to `model`, moves their weights off the
    initialisation by `scale` x N(0, 1) (seeded) so they change the output, and saves them under `folder`."""
    from modeling_aesformer.adapters import add_dataset_adapter, save_adapters

    peft_model = add_dataset_adapter(model, "ava", dataset="AVA")
    peft_model = add_dataset_adapter(peft_model, "photonet", num_score_bins=7, score_range=(1, 7),
                                     threshold=4.0, dataset="Photo.net")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, param in peft_model.named_parameters():
            if ".ava." in key or ".photonet." in key:
                param.add_(scale * torch.randn(param.shape, generator=g))
    save_adapters(peft_model, folder)
    return peft_model


def score_cli(*argv):
    """`aesformer score ARGV...` in this process; returns its exit code."""
    from aesformer_cli import score as scoring

    parser = argparse.ArgumentParser(prog="aesformer")
    scoring.add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["score", *map(str, argv)])
    return args.func(args)


def camera_jpeg(path, size, seed=0):
    """A camera-like JPEG of `size` at `path`: a smooth scene with noise (so it does not compress to nothing)."""
    import numpy as np
    import PIL.Image

    from modeling_aesformer.toy import draw_scene

    rng = np.random.default_rng(seed)
    scene = np.asarray(draw_scene(seed, size=(64, 48)).resize(size, PIL.Image.BICUBIC), dtype=np.float32)
    noisy = np.clip(scene + rng.normal(0, 8, scene.shape), 0, 255).astype(np.uint8)
    PIL.Image.fromarray(noisy).save(path, quality=90)
    return path


def read_rows(path):
    """The rows of a score output file (.jsonl or .csv)."""
    if str(path).endswith(".jsonl"):
        return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def trainer_processor(vocab_path):
    """The tiny model's processor (32 px images, the 512-token toy vocabulary at `vocab_path`)."""
    from transformers import BertTokenizer

    from modeling_aesformer import AesformerImageProcessor, AesformerProcessor

    tokenizer = BertTokenizer(vocab=str(vocab_path), do_lower_case=False)
    return AesformerProcessor(AesformerImageProcessor(size={"height": 32, "width": 32}), tokenizer, max_length=64)


def trainer_collator(processor, **kwargs):
    """`AestheticCollator` for `transformers.Trainer`: only the model's inputs (as docs/trainer.md shows)."""
    from aesformer_training.collator import AestheticCollator

    return AestheticCollator(processor, model_inputs_only=True, **kwargs)


BLOCKED_PACKAGES = ("modeling_aesformer", "aesformer_processing", "aesformer_training")


def blocked_imports_preamble(repo, blocked=BLOCKED_PACKAGES, uninstalled=()) -> str:
    """The first lines of a script for a clean process that must work WITHOUT the package: importing any of
    `blocked` (top-level names) raises, and the repository `repo` is off sys.path. `uninstalled` names look absent
    (`importlib.util.find_spec` gives None, as libraries probe for optional packages; importing them fails)."""
    return (
        "import importlib.abc, sys\n"
        f"sys.modules.update(dict.fromkeys({list(uninstalled)!r}))\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {set(blocked)!r}:\n"
        "            raise ImportError(f'{name} must not be importable in this process')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path = [p for p in sys.path if p not in ('', {str(repo)!r})]\n"
    )


def run_clean_process(script, args, tmp_path, timeout=600):
    """Run `script` (Python source) with `args` in a fresh interpreter: offline, a throw-away HF_HOME, no
    PYTHONPATH, one thread, cwd `tmp_path`. Returns the CompletedProcess (asserting exit code 0)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "clean_process.py"
    path.write_text(script)
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(path), *map(str, args)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=timeout)
    assert run.returncode == 0, run.stderr[-4000:]
    return run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def two_process_launch(argv, env_extra=None):
    """(command, environment) that `accelerate launch` two CPU processes on this machine running `argv` (a script
    and its arguments, or `-m module ...`). Each launch gets its own free rendezvous port: one launch right after
    another (stage 1 then stage 2) must not meet the previous one's port still bound."""
    import os
    import sys

    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--main_process_port", str(free_port()), "--mixed_precision", "no",
              "--dynamo_backend", "no"]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return launch + [str(a) for a in argv], env


def launch_two_processes(argv, env_extra=None, timeout=600):
    """Run `two_process_launch(argv)` to its end: the `subprocess.CompletedProcess` (text output captured)."""
    import subprocess

    command, env = two_process_launch(argv, env_extra)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


# ------------------------------------------------------------------------------------ source rules (AST walks)
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# The files a Hub folder ships as remote code: name in the folder -> the package file it is a byte copy of.
SHIPPED_SOURCES = {
    "configuration_aesformer.py": REPO_ROOT / "modeling_aesformer" / "configuration_aesformer.py",
    "modeling_aesformer.py": REPO_ROOT / "modeling_aesformer" / "modeling_aesformer.py",
    "processing_aesformer.py": REPO_ROOT / "processing" / "processing_aesformer.py",
    "pipeline_aesformer.py": REPO_ROOT / "modeling_aesformer" / "pipeline_aesformer.py",
    "adapter_weights_aesformer.py": REPO_ROOT / "modeling_aesformer" / "adapter_weights_aesformer.py",
    "attention_maps_aesformer.py": REPO_ROOT / "modeling_aesformer" / "attention_maps_aesformer.py",
}
SHIPPED_THIRD_PARTY = {"torch", "numpy", "PIL", "transformers"}
# Standard-library modules with no business in model code: code execution, pickles, processes, raw memory.
SHIPPED_DENIED = {"pickle", "marshal", "shelve", "subprocess", "ctypes", "socket", "multiprocessing", "importlib",
                  "runpy", "code", "pty", "webbrowser", "dill"}


def project_sources():
    """Every Python file of the four packages (as pyproject maps them) and of bench/."""
    import tomllib

    folders = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-dir"].values()
    return sorted({path for folder in folders for path in (REPO_ROOT / folder).rglob("*.py")}
                  | set((REPO_ROOT / "bench").rglob("*.py")))


def import_statements(tree, module_level_only=False):
    """(line, level, module names) for each import statement of `tree`: all of them (function bodies included), or
    only those that run when the module is imported (not inside a function or class)."""
    import ast

    if module_level_only:
        nodes = [sub for node in tree.body if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                      ast.ClassDef)) for sub in ast.walk(node)]
    else:
        nodes = list(ast.walk(tree))
    for node in nodes:
        if isinstance(node, ast.Import):
            yield node.lineno, 0, [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, node.level, [node.module or ""]


def shipped_file_problems(paths):
    """What breaks the remote-code rules in the shipped files `paths` (name -> path): imports only of the standard
    library (less `SHIPPED_DENIED`), torch, numpy, PIL, transformers and, as ``from .x import Y``, the shipped files
    in the same folder; no dynamic import, eval/exec/compile, processes or torch.load. Unique base names."""
    import ast
    import sys

    problems = []
    names = {name[:-3] for name in paths}
    if len(names) != len(paths):
        problems.append("two shipped files share a base name (custom_object_save copies by base name)")
    for name, path in paths.items():
        siblings = {other[:-3] for other, p in paths.items() if p.parent == path.parent}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, level, modules in import_statements(tree):
            for module in modules:
                if level:
                    if level != 1 or not module or "." in module or module not in siblings:
                        problems.append(f"{name}:{line}: from {'.' * level}{module} import")
                    continue
                top = module.split(".")[0]
                if top in SHIPPED_DENIED or (top not in sys.stdlib_module_names and top not in SHIPPED_THIRD_PARTY):
                    problems.append(f"{name}:{line}: import {module}")
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "compile", "__import__"):
                problems.append(f"{name}:{node.lineno}: call {node.func.id}")
            elif isinstance(node.func, ast.Attribute):
                owner = getattr(node.func.value, "id", "")
                if node.func.attr in ("import_module", "__import__", "system", "popen") or (owner, node.func.attr) in (
                        ("torch", "load"), ("os", "exec"), ("os", "spawn")):
                    problems.append(f"{name}:{node.lineno}: call {owner}.{node.func.attr}")
    return problems


# ------------------------------------------------------------------- hostile inputs and interrupted work (issue 9)
PIL_DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # as Pillow ships it; nothing in this project may change it
# The environment of a command run in a child process: one thread each, the repository importable.
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                  "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def tokenizer_for(folder):
    """The toy BERT tokenizer (512 words), its vocab.txt written in `folder`."""
    from transformers import BertTokenizer

    from modeling_aesformer.toy import write_toy_vocab

    return BertTokenizer(vocab=str(write_toy_vocab(pathlib.Path(folder) / "vocab.txt", 512)), do_lower_case=False)


def png_chunk(kind, data):
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width, height):
    """A ~60-byte PNG whose header declares width x height RGB pixels (the data is a few zero bytes)."""
    import struct
    import zlib

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def encoded(image, fmt, **kwargs):
    import io

    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
# name -> the reason an error must give (None: the file must be scored)
HOSTILE = {
    "zero_bytes.jpg": "cannot identify image file",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "text.jpg": "cannot identify image file",
    "page.png": "cannot identify image file",
    "bomb.png": "DecompressionBomb",
    "animated.gif": None,
    "animated.webp": None,
    "cmyk.jpg": None,
    "gray16.png": None,
    "palette_transparent.png": None,
    "exif_rotated.jpg": None,
    "one_by_one.png": None,
    "thin_1x20000.png": None,
    "thin_20000x1.png": None,
}


def write_hostile_files(folder):
    """The files of `HOSTILE` in `folder`, each built here from bytes; returns `folder`."""
    import PIL.Image

    noise = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    jpeg, png = encoded(noise, "JPEG", quality=90), encoded(noise, "PNG")
    files = {
        "zero_bytes.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text.jpg": b"This is a note, not a photograph.\n",
        "page.png": b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>\n",
        # 20000 x 20000 = 400 M pixels declared in a 100-byte file (1.2 GB once decoded)
        "bomb.png": bomb_png(20000, 20000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    frames = [PIL.Image.new("RGB", (24, 16), RED), PIL.Image.new("RGB", (24, 16), BLUE)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], duration=40, loop=0,
                   lossless=True)
    PIL.Image.new("CMYK", (24, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # red in CMYK
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    PIL.Image.fromarray(ramp).save(folder / "gray16.png")
    palette = PIL.Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 255] + [255, 0, 0] + [0] * 762)
    palette.paste(1, (8, 0, 16, 16))  # left half index 0 (transparent), right half index 1 (red)
    palette.save(folder / "palette_transparent.png", transparency=0)
    stored = PIL.Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (0, 10, 40, 20))  # stored: top half red, bottom half blue
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    stored.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    PIL.Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one_by_one.png")
    PIL.Image.new("RGB", (1, 20000), (10, 200, 30)).save(folder / "thin_1x20000.png")
    PIL.Image.new("RGB", (20000, 1), (10, 200, 30)).save(folder / "thin_20000x1.png")
    assert sorted(p.name for p in folder.iterdir()) == sorted(HOSTILE)
    return folder


def wait_for(path, process, timeout=300):
    """Wait until `path` exists (the child process reached its stall point); fail if `process` ends first."""
    import time

    start = time.monotonic()
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {path} appeared:\n"
                                 + process.stderr.read().decode(errors="replace")[-3000:])
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


class Payload:
    """A pickle that runs `os.mkdir(marker)` when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def kill_when_stalled(process, marker, timeout=300):
    """SIGKILL `process` once it has written `marker` (its stall point, see `wait_for`); it is dead on return."""
    import signal

    try:
        wait_for(marker, process, timeout=timeout)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)


def run_threads(work, count, timeout=300):
    """`work(k)` for k in range(count), each in its own thread, all started before any is joined."""
    import threading

    threads = [threading.Thread(target=work, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
