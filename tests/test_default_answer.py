"""Issue 14: a model folder knows its trained image-only answer, and every entry point gives it.

A tiny stage 1 + stage 2 run through the command line; then one photo's score through `AutoModel.from_pretrained`,
`pipeline`, `aesformer score`, the page, `explain`, `eval`, the exported folder with the package, and the exported
folder in a clean process where the package AND peft cannot be imported. All agree (1e-5) and differ from the
untrained head's.
A model whose image-only head is untrained still answers, but says so (warning once per model, `trained: false`).
"""

import argparse
import json
import shutil
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoProcessor, pipeline

from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import write_generic
from modeling_aesformer import AesformerConfig, AesformerModel
from aesformer_cli.main import main as cli_main
from modeling_aesformer.toy import draw_scene

from _helpers import blocked_imports_preamble, read_rows, run_clean_process, score_cli, tokenizer_for, \
    toy_training_rows

REPO = Path(__file__).resolve().parent.parent
ATOL = 1e-5

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, data, stage-1-only model copy, model folder after stage 2 with adapter "toy" as its default)."""
    root = tmp_path_factory.mktemp("default-answer")
    data = root / "data"
    write_generic(data, toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.0))
    (root / "vocab").mkdir()
    tokenizer_for(root / "vocab").save_pretrained(root / "tok")
    common = ["--data", str(data), "--batch-size", "8", "--epochs", "1", "--seed", "3"]
    assert cli_main(["pretrain", "--preset", "tiny", "--tokenizer", str(root / "tok"), "--output-dir",
                     str(root / "stage1"), "--queue-size", "8", *common]) == 0
    model_dir = root / "stage1" / "model"
    stage1_only = root / "stage1-only"
    shutil.copytree(model_dir, stage1_only)
    # a high learning rate: one epoch must move the adapter well away from the untrained head
    assert cli_main(["adapt", "--model", str(model_dir), "--output-dir", str(root / "s2"), "--adapter-name", "toy",
                     "--learning-rate", "1e-2", *common]) == 0
    photo = root / "photo.png"
    draw_scene(101, size=(48, 40)).save(photo)
    return root, data, stage1_only, model_dir, photo


def peft_reference(model_dir, photo):
    """(score with adapter "toy" through PEFT, score of the untrained base head): the ground truth."""
    from modeling_aesformer.adapters import load_adapters

    model = load_adapters(AesformerModel.from_pretrained(model_dir, load_default_adapter=False), model_dir,
                          names=["toy"]).eval()
    inputs = AutoProcessor.from_pretrained(model_dir)(images=[str(photo)], return_tensors="pt")
    with torch.inference_mode():
        outs = model.forward_adapters(**inputs, adapters=["toy", "base"])
    return float(outs["toy"].score[0]), float(outs["base"].score[0])


CLEAN_SCRIPT = textwrap.dedent(
    """
    import importlib.util, json, warnings
    import torch
    from transformers import AutoModel, AutoProcessor, pipeline
    folder, photo, out_path = sys.argv[1], sys.argv[2], sys.argv[3]
    assert importlib.util.find_spec("peft") is None
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    with torch.inference_mode():
        out = model(**processor(images=[photo], return_tensors="pt"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipeline("image-aesthetics", model=folder, trust_remote_code=True)(photo)
    json.dump({"model": float(out.score[0]), "adapter": out.image_only_adapter, "trained": out.image_only_trained,
               "pipeline": result, "warnings": [str(w.message) for w in caught]}, open(out_path, "w"))
    """
)


def test_every_entry_point_answers_with_the_trained_adapter(trained, tmp_path, capsys):
    root, data, _, model_dir, photo = trained
    config = json.loads((model_dir / "config.json").read_text())
    assert config["default_adapter"] == "toy" and config["image_only_trained"] is False
    want, untrained = peft_reference(model_dir, photo)
    assert abs(want - untrained) > 1e-3  # the test can tell the two heads apart
    scores = {}

    # AutoModel.from_pretrained with the package (the README Quick start): the default adapter is folded in
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    with torch.inference_mode():
        out = model(**processor(images=[str(photo)], return_tensors="pt"))
    assert (out.image_only_adapter, out.image_only_trained) == ("toy", True)
    scores["AutoModel"] = float(out.score[0])

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a trained answer warns about nothing
        result = pipeline("image-aesthetics", model=model)(str(photo))
    assert (result["adapter"], result["trained"], result["branch"]) == ("toy", True, "image_only")
    scores["pipeline"] = result["score"]

    from modeling_aesformer.adapters import load_adapters

    peft_model = load_adapters(AutoModel.from_pretrained(model_dir), model_dir)  # PEFT: the default is active
    result = pipeline("image-aesthetics", model=peft_model)(str(photo))
    assert result["adapter"] == "toy" and result["trained"] is True
    scores["pipeline + load_adapters"] = result["score"]

    assert score_cli(photo, "--model", model_dir, "--output", tmp_path / "scores.csv", "--num-workers", 0) == 0
    (row,) = read_rows(tmp_path / "scores.csv")
    assert (row["adapter"], row["trained"]) == ("toy", "true")
    scores["aesformer score"] = float(row["score"])

    from aesformer_cli import app_page, serve as serve_module

    backend = serve_module.ModelBackend(model_dir, device="cpu", log=lambda *a: None)
    result = app_page.score_one(backend, str(photo), "", None)  # the page's /score API, no adapter chosen
    assert (result["adapter"], result["trained"]) == ("toy", True)
    scores["aesformer serve (page)"] = result["score"]

    from aesformer_cli import explain as explain_module

    parser = argparse.ArgumentParser()
    explain_module.add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explain", str(photo), "--model", str(model_dir), "--output", str(tmp_path / "e.png")])
    assert explain_module.run(args) == 0
    printed = capsys.readouterr().out
    assert "adapter toy" in printed and "UNTRAINED" not in printed
    scores["aesformer explain"] = float(printed.split("score ")[1].split(" ")[0])  # printed with 3 decimals
    from modeling_aesformer.explanation import explain

    explanation = explain(model, processor, str(photo))
    assert explanation.adapter == "toy" and explanation.trained is True
    scores["explain()"] = explanation.score

    # export: the Hub folder keeps the model's own weights and the default, folded in at load by the folder's code
    hub = root / "hub"
    if not hub.exists():
        assert cli_main(["export", str(model_dir), "--output", str(hub)]) == 0
    from huggingface_hub import ModelCard

    card = ModelCard.load(hub / "README.md")  # the card tells the truth about this model (issue 14, item 6)
    assert card.data.model_name == root.name  # not "model" (the folder is <root>/stage1/model)
    assert {r.metric_type for r in card.data.eval_results} >= {"srcc", "plcc"}  # results found beside the model
    assert any("toy adapter" in r.metric_name for r in card.data.eval_results)
    assert "answered by the `toy` adapter" in card.text and "copyrighted by their photographers" in card.text
    assert "words of the comments, cut to 128 tokens" in card.text  # the tiny preset has 128 positions
    with torch.inference_mode():
        out = AutoModel.from_pretrained(hub).eval()(**processor(images=[str(photo)], return_tensors="pt"))
    scores["export, package"] = float(out.score[0])
    clean = blocked_imports_preamble(REPO, uninstalled=["peft"]) + CLEAN_SCRIPT
    run_clean_process(clean, [hub, photo, tmp_path / "clean.json"], tmp_path)
    remote = json.loads((tmp_path / "clean.json").read_text())
    assert (remote["adapter"], remote["trained"]) == ("toy", True)
    assert (remote["pipeline"]["adapter"], remote["pipeline"]["trained"]) == ("toy", True)
    assert not [w for w in remote["warnings"] if "no training" in w]
    scores["export, no package, no peft: AutoModel"] = remote["model"]
    scores["export, no package, no peft: pipeline"] = remote["pipeline"]["score"]

    print("\n".join(f"{name:>40}: {value:.6f}" for name, value in scores.items()))
    print(f"{'untrained base head (adapter=base)':>40}: {untrained:.6f}")
    for name, value in scores.items():
        tolerance = 5e-4 if name == "aesformer explain" else ATOL
        assert value == pytest.approx(want, abs=tolerance), (name, value, want)

    # eval: its image-only metrics are the default adapter's
    default_json, named_json = tmp_path / "default.json", tmp_path / "named.json"
    assert cli_main(["eval", "--model", str(model_dir), "--data", str(data), "--output", str(default_json)]) == 0
    assert cli_main(["eval", "--model", str(model_dir), "--data", str(data), "--adapter", "toy",
                     "--output", str(named_json)]) == 0
    default, named = json.loads(default_json.read_text()), json.loads(named_json.read_text())
    assert default["image_only"]["adapter"] == "toy" and default["image_only"]["trained"] is True
    for metric in ("srcc", "plcc", "emd_r1"):
        assert default["image_only"][metric] == pytest.approx(named["image_only"][metric], abs=ATOL)


def test_set_default_changes_every_entry_point_and_no_default_keeps_it(trained, tmp_path):
    root, data, _, model_dir, photo = trained
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    want, untrained = peft_reference(folder, photo)
    processor = AutoProcessor.from_pretrained(folder)

    def score():
        with torch.inference_mode():
            out = AutoModel.from_pretrained(folder).eval()(**processor(images=[str(photo)], return_tensors="pt"))
        return float(out.score[0]), out.image_only_adapter

    assert cli_main(["set-default", str(folder), "base"]) == 0
    assert json.loads((folder / "config.json").read_text())["default_adapter"] is None
    assert score() == (pytest.approx(untrained, abs=ATOL), "base")
    assert cli_main(["set-default", str(folder), "nope"]) == 2  # an adapter the folder does not have
    assert cli_main(["set-default", str(folder), "toy"]) == 0
    assert score() == (pytest.approx(want, abs=ATOL), "toy")
    # naming "base" still gives the model's own (untrained) head, marked as such
    assert score_cli(photo, "--model", folder, "--adapter", "base", "--output", tmp_path / "base.csv",
                     "--num-workers", 0) == 0
    (row,) = read_rows(tmp_path / "base.csv")
    assert (row["adapter"], row["trained"]) == ("base", "false")
    assert float(row["score"]) == pytest.approx(untrained, abs=ATOL)

    # a second adapter trained with --no-default leaves the default alone
    assert cli_main(["adapt", "--model", str(folder), "--output-dir", str(tmp_path / "s2b"), "--adapter-name",
                     "other", "--data", str(data), "--batch-size", "8", "--max-steps", "1", "--no-default"]) == 0
    assert json.loads((folder / "config.json").read_text())["default_adapter"] == "toy"
    assert score() == (pytest.approx(want, abs=ATOL), "toy")


def test_an_untrained_head_answers_but_says_so(trained, tmp_path, capsys):
    _, _, stage1_only, _, photo = trained
    assert json.loads((stage1_only / "config.json").read_text())["image_only_trained"] is False

    model = AutoModel.from_pretrained(stage1_only).eval()
    scorer = pipeline("image-aesthetics", model=model)
    with pytest.warns(UserWarning, match="no training or conversion produced") as caught:
        first = scorer(str(photo))
    assert "aesformer adapt --model" in str(caught[0].message)
    assert (first["adapter"], first["trained"]) == ("base", False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        again = scorer([str(photo), {"image": str(photo), "comments": "lovely light"}])
    assert again[0]["trained"] is False and again[1]["trained"] is None and again[1]["branch"] == "with_comments"

    assert score_cli(photo, "--model", stage1_only, "--output", tmp_path / "s.jsonl", "--num-workers", 0) == 0
    assert read_rows(tmp_path / "s.jsonl")[0]["trained"] is False
    assert "no training or conversion produced" in capsys.readouterr().out

    # a model built from a config says so in its output
    out = AesformerModel(AesformerConfig.from_preset("tiny")).eval()(torch.rand(1, 3, 32, 32))
    assert (out.image_only_adapter, out.image_only_trained) == ("base", False)


def test_a_lora_default_adapter_folds_to_what_peft_computes(tmp_path):
    """Folding covers the LoRA preset (W + scaling * B @ A) and an adapter with its own scale (7 bins); PEFT
    adapters loaded later go on top of the model's own weights (the fold is undone first)."""
    from modeling_aesformer.adapters import add_dataset_adapter, load_adapters, save_adapters, set_default_adapter

    torch.manual_seed(0)
    model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    model.save_pretrained(tmp_path)
    peft_model = add_dataset_adapter(model, "jas", preset="lora", num_score_bins=7, score_range=(1, 7), threshold=4)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for key, param in peft_model.named_parameters():
            if ".jas." in key:  # lora_B starts at zero: move every adapter weight so the fold has work to do
                param.add_(0.2 * torch.randn(param.shape, generator=g))
    save_adapters(peft_model, tmp_path)
    set_default_adapter(tmp_path, "jas")
    pixels = torch.rand(2, 3, 32, 32, generator=g)
    with torch.inference_mode():
        want = peft_model.eval()(pixels, adapter="jas")
        base = AesformerModel.from_pretrained(tmp_path, load_default_adapter=False).eval()(pixels)
        folded = AesformerModel.from_pretrained(tmp_path).eval()
        got = folded(pixels)
        assert got.image_only_adapter == "jas" and got.distribution.shape[-1] == 7
        torch.testing.assert_close(got.distribution, want.distribution, atol=ATOL, rtol=0)
        torch.testing.assert_close(got.score, want.score, atol=ATOL, rtol=0)
        reloaded = load_adapters(folded, tmp_path).eval()
        outs = reloaded.forward_adapters(pixels, adapters=["base", "jas"])
        assert reloaded.get_base_model().config.merged_adapter is None
        torch.testing.assert_close(outs["base"].score, base.score, atol=ATOL, rtol=0)
        torch.testing.assert_close(outs["jas"].score, want.score, atol=ATOL, rtol=0)
        assert reloaded(pixels).image_only_adapter == "jas"  # the default is the active PEFT adapter
