"""`aesformer export` / `aesformer push`: the Hub folder, its remote code (import rules, clean-process reload, also
under transformers 4.57), the model card, atomic writes (a failed export leaves the previous one loadable), the push
guard for converted weights, Auto classes that never need trust_remote_code with the package installed."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_aesformer import AesformerConfig
from aesformer_cli import export as export_command
from modeling_aesformer import export as export_module
from modeling_aesformer.export import ExportError, export_model, list_files, push_folder
from modeling_aesformer.toy import draw_scene

from _helpers import SHIPPED_SOURCES, blocked_imports_preamble, shipped_file_problems, tiny_model_folder

REPO = Path(__file__).resolve().parent.parent
COMMENTS = ["lovely soft light, well placed subject", None, ["great colour", "the horizon is tilted"], None]
RESULTS = {"stage": "stage2", "dataset": "AVA", "config": {"adapter_name": "ava"},
           "test": {"srcc": 0.7123, "plcc": 0.7345, "krcc": 0.5321, "accuracy": 0.8012, "mae": 0.41, "rmse": 0.52,
                    "emd_r1": 0.0456, "emd_r2": 0.0567, "n": 2000}, "history": [], "skipped_images": []}
EXPECTED_FILES = [
    "README.md", "adapter_weights_aesformer.py", "adapters/README.md",
    "adapters/ava/adapter_config.json", "adapters/ava/adapter_model.safetensors", "adapters/ava/aesformer_adapter.json",
    "adapters/photonet/adapter_config.json", "adapters/photonet/adapter_model.safetensors",
    "adapters/photonet/aesformer_adapter.json", "attention_maps_aesformer.py",
    "config.json", "configuration_aesformer.py", "model.safetensors", "modeling_aesformer.py",
    "pipeline_aesformer.py", "preprocessor_config.json", "processing_aesformer.py", "processor_config.json",
    "requirements.txt", "tokenizer.json", "tokenizer_config.json",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    model_dir = tiny_model_folder(root / "model", adapters_scale=0.05)
    (root / "results.json").write_text(json.dumps(RESULTS))
    hub = root / "hub"
    export_model(model_dir, hub, card_data={"repo_id": "someone/aesformer-tiny", "language": "en"},
                 results=RESULTS, log=lambda *a: None)
    return model_dir, hub


# ---------------------------------------------------------------------------------------------- folder contents
def test_export_writes_a_complete_self_contained_folder(exported):
    model_dir, hub = exported
    assert list_files(hub) == EXPECTED_FILES
    config = json.loads((hub / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_aesformer.AesformerConfig",
                                  "AutoModel": "modeling_aesformer.AesformerModel"}
    assert config["custom_pipelines"] == {"image-aesthetics": {
        "impl": "pipeline_aesformer.AesformerAestheticsPipeline", "pt": ["AutoModel"], "type": "image"}}
    processor_config = json.loads((hub / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_aesformer.AesformerProcessor"
    for name, source in SHIPPED_SOURCES.items():  # the shipped files are the package's, byte for byte
        assert (hub / name).read_bytes() == source.read_bytes(), name
    for name in ("ava", "photonet"):
        for file in ("adapter_config.json", "adapter_model.safetensors", "aesformer_adapter.json"):
            assert (hub / "adapters" / name / file).read_bytes() == (model_dir / "adapters" / name / file).read_bytes()
    assert not (hub / "adapter_config.json").exists()
    # no temporary folder left beside the output
    assert sorted(p.name for p in hub.parent.iterdir() if p.name.startswith(".")) == []


def test_requirements_and_template_copies_stay_in_sync(exported):
    _, hub = exported

    def requirements(text):
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]

    assert requirements((REPO / "requirements.txt").read_text()) == export_module.HUB_REQUIREMENTS
    assert requirements((hub / "requirements.txt").read_text()) == export_module.HUB_REQUIREMENTS
    # one template, the packaged one; the repository's model_card.md only points to it
    assert "modeling_aesformer/templates/model_card.md" in (REPO / "model_card.md").read_text()
    assert "{{" not in (REPO / "model_card.md").read_text() and "{{ card_data }}" in export_module.TEMPLATE.read_text()


# ------------------------------------------------------------------------------------------ clean-process reload
REMOTE_SCRIPT = blocked_imports_preamble(REPO) + textwrap.dedent(
    """
    import importlib.util, json
    import torch, transformers
    from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline
    folder, images, comments, out_path = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), sys.argv[4]
    config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    for obj in (config, model, processor):
        assert type(obj).__module__.startswith("transformers_modules"), type(obj).__module__
    with torch.inference_mode():
        out = model(**processor(images=images, comments=comments, return_tensors="pt"))
    scorer = pipeline("image-aesthetics", model=folder, trust_remote_code=True)
    assert type(scorer).__module__.startswith("transformers_modules"), type(scorer).__module__
    inferred = pipeline(model=folder, trust_remote_code=True)  # the task comes from custom_pipelines
    inputs = [{"image": i, "comments": c} for i, c in zip(images, comments)]
    result = {
        "version": transformers.__version__,
        "classes": [type(config).__name__, type(model).__name__, type(processor).__name__],
        "distribution": out.distribution.tolist(), "used_comments": out.used_comments.tolist(),
        "pipeline": scorer(inputs, batch_size=2), "inferred": inferred(images[0]),
    }
    if importlib.util.find_spec("peft") is not None:  # adapters through transformers' own PEFT integration
        with_adapters = pipeline("image-aesthetics", model=folder, trust_remote_code=True, load_adapters=True)
        result["adapters"] = with_adapters(images[1], adapter="all")
        # what the Space's page asks for: the answering head's bin values, and the attention maps
        result["bin_values"] = [r["bin_values"] for r in with_adapters(images[1], adapter="all", return_bin_values=True)]
        maps = with_adapters(inputs[0], adapter="photonet", return_attention=True)
        result["attention"] = [maps["attention_map"].tolist(), maps["word_attention"]]
    json.dump(result, open(out_path, "w"))
    print("remote ok", transformers.__version__)
    """
)


def run_remote(python, hub, tmp_path, env_extra=None):
    images = []
    for i in range(len(COMMENTS)):
        path = tmp_path / f"remote{i}.png"
        draw_scene(20 + i, size=(44 + 3 * i, 36)).save(path)
        images.append(str(path))
    script = tmp_path / "remote.py"
    script.write_text(REMOTE_SCRIPT)
    out_path = tmp_path / "remote.json"
    env = {**os.environ, "PYTHONPATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_HOME": str(tmp_path / "hf-home"), "OMP_NUM_THREADS": "1", **(env_extra or {})}
    run = subprocess.run([str(python), str(script), str(hub), json.dumps(images), json.dumps(COMMENTS),
                          str(out_path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-4000:]
    return images, {**json.loads(out_path.read_text()), "stderr": run.stderr}


def local_reference(model_dir, images):
    from modeling_aesformer.adapters import load_adapters

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    with torch.inference_mode():
        out = model(**processor(images=images, comments=COMMENTS, return_tensors="pt"))
    scorer = pipeline("image-aesthetics", model=model, processor=processor)
    results = scorer([{"image": i, "comments": c} for i, c in zip(images, COMMENTS)])
    peft_model = load_adapters(AutoModel.from_pretrained(model_dir), model_dir).eval()
    adapters = pipeline("image-aesthetics", model=peft_model, processor=processor)(images[1], adapter="all")
    return out, results, adapters, scorer(images[0])


def compare(remote, model_dir, images, atol):
    out, results, adapters, single = local_reference(model_dir, images)
    assert remote["classes"] == ["AesformerConfig", "AesformerModel", "AesformerProcessor"]
    assert remote["used_comments"] == out.used_comments.tolist() == [True, False, True, False]
    torch.testing.assert_close(torch.tensor(remote["distribution"]), out.distribution, atol=atol, rtol=0)
    for got, want in zip(remote["pipeline"], results):
        assert got.keys() == want.keys() and got["branch"] == want["branch"] and got["label"] == want["label"]
        assert got["score"] == pytest.approx(want["score"], abs=atol * 10)
        assert got["std"] == pytest.approx(want["std"], abs=atol * 10)
    assert remote["inferred"]["branch"] == "image_only"
    assert remote["inferred"]["score"] == pytest.approx(single["score"], abs=atol * 10)
    if "adapters" in remote:
        assert [r["adapter"] for r in remote["adapters"]] == ["base", "ava", "photonet"]
        for got, want in zip(remote["adapters"], adapters):
            assert got["score"] == pytest.approx(want["score"], abs=atol * 10)
            assert len(got["distribution"]) == len(want["distribution"])
        assert remote["bin_values"] == [[float(v) for v in range(1, 11)]] * 2 + [[float(v) for v in range(1, 8)]]
        heat, words = remote["attention"]
        assert np.asarray(heat).shape == (2, 2) and max(map(max, heat)) == pytest.approx(1.0)
        assert words and sum(w for _, w in words) == pytest.approx(1.0)


def test_exported_folder_reloads_in_a_clean_process(exported, tmp_path):
    model_dir, hub = exported
    images, remote = run_remote(sys.executable, hub, tmp_path)
    assert "adapters" in remote  # peft is installed here: the no-package adapter route was exercised too
    compare(remote, model_dir, images, atol=1e-6)
    # a quiet load: loading the adapters reports nothing when the scores are right (issue 14)
    for noise in ("MISSING", "newly initialized", "Unsupported layer type", "Already found a `peft_config`"):
        assert noise not in remote["stderr"], remote["stderr"][-3000:]


def _tf4_venv() -> Path:
    return Path(os.environ.get("AESFORMER_TF4_VENV") or Path(tempfile.gettempdir()) / "aesformer-tf4-venv")


def _ensure_tf4_venv() -> tuple:
    """(python of a venv with transformers 4.57 + the local CPU torch 2.13.0, seconds spent creating it or None)."""
    venv = _tf4_venv()
    python = venv / "bin" / "python"
    check = "import transformers, torch, PIL, peft; assert transformers.__version__.startswith('4.57')"
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True).returncode == 0:
        return python, None
    start = time.perf_counter()
    partial = venv.with_name(venv.name + ".partial")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True, timeout=300)
    # torch pinned: the local CPU wheel (an unpinned torch pulls a multi-GB CUDA build); peft for the adapters
    install = subprocess.run(
        [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", "torch==2.13.0", "transformers==4.57.*",
         "pillow", "numpy", "safetensors", "peft==0.21.*"], capture_output=True, text=True, timeout=1800)
    if install.returncode != 0:
        pytest.skip(f"could not build the transformers 4.57 venv (package index unreachable?):\n"
                    f"{install.stderr[-2000:]}")
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    os.replace(partial, venv)  # only a complete venv is ever cached; bin/python still works after the rename
    return python, time.perf_counter() - start


@pytest.mark.slow
def test_exported_folder_works_under_transformers_4_57(exported, tmp_path):
    model_dir, hub = exported
    python, seconds = _ensure_tf4_venv()
    if seconds is not None:
        print(f"\n[tf4] created {_tf4_venv()} in {seconds:.0f} s")
    images, remote = run_remote(python, hub, tmp_path)
    assert remote["version"].startswith("4.57") and "adapters" in remote
    compare(remote, model_dir, images, atol=1e-5)
    # a complete folder loads quietly: Swin's computed relative_position_index (a 4.x buffer) is not "missing"
    for noise in ("not initialized", "TRAIN this model", "MISSING"):
        assert noise not in remote["stderr"], remote["stderr"][-3000:]


# ----------------------------------------------------------------------------------------------------- the card
def test_model_card_parses_and_has_the_metadata(exported):
    from huggingface_hub import ModelCard

    _, hub = exported
    card = ModelCard.load(hub / "README.md")  # no validate(): it calls the network
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["language"] == "en"
    assert {"aesformer", "image-aesthetics"} <= set(data["tags"]) and "converted-weights" not in data["tags"]
    # nobody stated a licence, Hub dataset ids, a base model or a Hub task that fits a score: none is invented
    assert not {"license", "datasets", "base_model", "pipeline_tag"} & set(data), data
    assert "licence not stated" in card.text and "DPChallenge" not in card.text
    results = card.data.eval_results
    metrics = {k: v for k, v in RESULTS["test"].items() if k != "n"}  # the sample count is not a metric
    assert {r.metric_type: r.metric_value for r in results} == metrics
    assert {r.metric_name for r in results} >= {"SRCC (ava adapter)", "EMD (r=1) (ava adapter)"}
    assert {r.dataset_name for r in results} == {"AVA"} and card.data.model_name == "aesformer-tiny"
    text = card.text
    for needle in ('pipeline("image-aesthetics", model="someone/aesformer-tiny", trust_remote_code=True)',
                   "## The score scale", "**1** (first bin) to **10** (last bin)", "`score > 5`",
                   "| `photonet` | Photo.net | 7 | 1 – 7 | 4 |", "## Limitations", "copyrighted by their photographers",
                   "aesformer score photos/", "| SRCC | 0.7123 |", "AVA test split (2,000 images)", "load_adapters"):
        assert needle in text, needle
    assert "no licence" not in text.lower()


def test_converted_weights_are_marked_and_push_needs_yes(tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi, ModelCard

    model_dir = tiny_model_folder(tmp_path / "converted", with_tokenizer=False)
    sha = "ab" * 32
    (model_dir / "README.md").write_text(  # the stub `aesformer convert-original` writes
        "# aesformer-t (converted from the original AesFormer checkpoint)\n\n"
        f"- Source checkpoint file: `aesformer_t.pth`\n- Source sha256: `{sha}`\n")
    hub = export_model(model_dir, tmp_path / "hub", log=lambda *a: None)
    card = ModelCard.load(hub / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "other" and data["license_name"] == "no-license-stated"
    assert "converted-weights" in data["tags"] and data["converted_from"] == export_module.ORIGINAL_SOURCE
    assert "state **no\nlicence**" in card.text and sha in card.text and "aesformer_t.pth" in card.text
    config = json.loads((hub / "config.json").read_text())
    assert config["conversion"]["sha256"] == sha  # the marker survives a re-export of the exported folder
    # no tokenizer in the folder: the export and its pipeline score images without comments
    assert "tokenizer.json" not in list_files(hub) and "processing_aesformer.py" in list_files(hub)
    scorer = pipeline("image-aesthetics", model=AutoModel.from_pretrained(hub))
    assert scorer.processor is None and scorer([draw_scene(0)] * 3, batch_size=2)[2]["branch"] == "image_only"

    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: calls.append("create_repo"))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, *a, **k: calls.append("upload_folder"))
    with pytest.raises(ExportError, match="without --yes"):
        push_folder(hub, "someone/aesformer-t", log=print)
    assert calls == [] and "state NO licence" in capsys.readouterr().out
    assert cli("push", hub, "--repo-id", "someone/aesformer-t") == 2  # a reported error (cli/common.py)


class FakeCommit:
    commit_url = "https://huggingface.co/someone/aesformer-tiny/commit/0123abc"
    oid = "0123abc"


def test_push_is_one_create_repo_and_one_commit(exported, monkeypatch, capsys):
    from huggingface_hub import HfApi

    _, hub = exported
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], {**kwargs, "files": list_files(kwargs["folder_path"])}))
        return FakeCommit()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(HfApi, "create_branch", lambda self, *a, **k: calls.append(("create_branch", a, k)))
    monkeypatch.setattr(HfApi, "repo_info", lambda self, repo_id, **k: SimpleNamespace(private=True))
    assert cli("push", hub, "--repo-id", "someone/aesformer-tiny", "--private") == 0
    assert [c[0] for c in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1] == "someone/aesformer-tiny" and calls[0][2]["private"] is True
    upload = calls[1][2]
    assert upload["repo_id"] == "someone/aesformer-tiny" and Path(upload["folder_path"]) == hub
    assert upload["files"] == EXPECTED_FILES and not upload.get("revision")
    assert FakeCommit.commit_url in capsys.readouterr().out
    calls.clear()
    assert cli("push", hub, "--repo-id", "someone/aesformer-tiny", "--revision", "v1") == 0
    assert [c[0] for c in calls] == ["create_repo", "create_branch", "upload_folder"]
    assert calls[2][2]["revision"] == "v1"


# -------------------------------------------------------------------------------------------- atomic writes, CLI
def cli(*argv):
    parser = argparse.ArgumentParser(prog="aesformer")
    export_command.add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    return export_command.run(args)


def test_export_is_atomic_and_refuses_to_clobber(exported, tmp_path, monkeypatch, capsys):
    model_dir, _ = exported
    target = tmp_path / "hub"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    assert cli("export", model_dir, "--output", target) == 2
    assert "--overwrite" in capsys.readouterr().err and list_files(target) == ["keep.txt"]

    def broken_card(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_module, "build_model_card", broken_card)
    with pytest.raises(RuntimeError, match="disk full"):
        export_model(model_dir, target, overwrite=True, log=lambda *a: None)
    assert list_files(target) == ["keep.txt"]  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]  # no temporary folder left
    monkeypatch.undo()

    card_data = tmp_path / "card.json"
    card_data.write_text(json.dumps({"license": "cc-by-nc-4.0", "tags": ["photography"], "model_name": "mine",
                                     "datasets": ["someone/ava-votes"], "base_model": "someone/aesformer-t"}))
    results = tmp_path / "results.json"
    results.write_text(json.dumps([RESULTS, {"dataset": "Photo.net", "test": {"srcc": 0.6}}]))
    assert cli("export", model_dir, "--output", target, "--overwrite", "--card-data", card_data,
               "--results", results) == 0
    assert "keep.txt" not in list_files(target) and "model.safetensors" in list_files(target)
    from huggingface_hub import ModelCard

    card = ModelCard.load(target / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and "photography" in card.data.tags
    assert card.data.datasets == ["someone/ava-votes"] and card.data.base_model == "someone/aesformer-t"
    assert "DPChallenge" in card.text  # the user's Hub dataset is AVA: the card says what AVA's images are
    assert {(r.dataset_name, r.metric_type) for r in card.data.eval_results} >= {("AVA", "srcc"), ("Photo.net", "srcc")}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["card.json", "hub", "results.json"]


def test_a_folder_written_by_the_converter_is_recognised(tmp_path):
    """Guards the coupling with `aesformer convert-original` (its README stub is the marker until it writes a
    `conversion` entry into config.json)."""
    convert = pytest.importorskip("modeling_aesformer.convert_original")
    layouts = pytest.importorskip("test_convert_original")  # builds a small original-format state dict
    out = tmp_path / "converted"
    convert.convert_original_checkpoint(layouts.tiny_original(), out, config=AesformerConfig.from_preset("tiny"))
    conversion = export_module.detect_conversion(out)
    assert conversion is not None and conversion["source"] == export_module.ORIGINAL_SOURCE


def test_a_failed_export_leaves_the_previous_export_loadable(exported, tmp_path, monkeypatch):
    from modeling_aesformer import export as export_module

    model_dir, hub = exported
    target = tmp_path / "hub"
    shutil.copytree(hub, target)
    before = {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    original_copytree = shutil.copytree

    def die_midway(src, dst, *args, **kwargs):  # the model and processor are written: now the adapters fail
        original_copytree(src, dst, *args, **kwargs)
        raise OSError("no space left on device")

    monkeypatch.setattr(export_module.shutil, "copytree", die_midway)
    with pytest.raises(OSError, match="no space left"):
        export_module.export_model(model_dir, target, overwrite=True, log=lambda *a: None)
    monkeypatch.undo()
    real_replace, calls = os.replace, []

    def die_between_renames(src, dst):  # the swap: old folder aside (1st rename), new one in place (2nd): fail 2nd
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(export_module.os, "replace", die_between_renames)
    with pytest.raises(KeyboardInterrupt):
        export_module.export_model(model_dir, target, overwrite=True, log=lambda *a: None)
    monkeypatch.undo()
    assert len(calls) >= 2
    assert {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()} == before  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]  # no temporary folder left
    AutoModel.from_pretrained(target)


def test_exported_remote_code_imports_only_allowed_modules(exported):
    _, hub = exported
    shipped = sorted(p.name for p in hub.rglob("*.py"))
    assert shipped == ["adapter_weights_aesformer.py", "attention_maps_aesformer.py", "configuration_aesformer.py",
                       "modeling_aesformer.py", "pipeline_aesformer.py", "processing_aesformer.py"]
    # the rule tests/test_layers.py checks on the package's files, here on the exported copies (one folder)
    assert shipped_file_problems({name: hub / name for name in shipped}) == []


def test_auto_classes_never_need_trust_remote_code_with_the_package(exported, monkeypatch):
    import transformers.dynamic_module_utils as dynamic
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

    import modeling_aesformer  # noqa: F401 - the package is installed and imported

    model_dir, hub = exported
    assert "auto_map" in json.loads((hub / "config.json").read_text())  # the folder does offer remote code

    def refuse(*args, **kwargs):
        raise AssertionError("the folder's own code was loaded")

    monkeypatch.setattr(dynamic, "get_class_from_dynamic_module", refuse)
    loaded = [AutoConfig.from_pretrained(hub), AutoModel.from_pretrained(hub), AutoProcessor.from_pretrained(hub),
              AutoImageProcessor.from_pretrained(hub)]
    for obj in loaded:
        assert type(obj).__module__.split(".")[0] in ("modeling_aesformer", "aesformer_processing"), type(obj)
    # the pipeline of an exported FOLDER runs the folder's pipeline file: transformers asks for trust, by design
    monkeypatch.undo()
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("image-aesthetics", model=str(hub))
    assert pipeline("image-aesthetics", model=loaded[1], processor=loaded[2])(
        PIL.Image.new("RGB", (8, 8)))["branch"] == "image_only"
