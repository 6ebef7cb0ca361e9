"""pipeline("image-aesthetics"): registered at import, inputs and output schema, batching, adapters, processor
fallback, a bad item of a list named, threads sharing one pipeline."""

import functools
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from transformers import AutoModel, pipeline

import modeling_aesformer
from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
from modeling_aesformer.toy import draw_scene

from _helpers import run_threads, tiny_model_folder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ["score", "std", "label", "threshold", "distribution", "branch", "adapter", "trained", "num_bins", "score_range",
        "warnings"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def perturb(model, name, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if f".{name}." in key:
                param.add_(0.05 * torch.randn(param.shape, generator=g))


@pytest.fixture(scope="module")
def pipe(model_dir):
    return pipeline("image-aesthetics", model=AutoModel.from_pretrained(model_dir))


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    paths = []
    for i in range(4):
        path = folder / f"scene{i}.{'png' if i % 2 else 'jpg'}"
        draw_scene(i, size=(48, 40)).save(path)
        paths.append(str(path))
    return paths


def check_result(result, branch, adapter="base", bins=10, distribution=True):
    assert list(result) == (KEYS if distribution else [k for k in KEYS if k != "distribution"])
    assert isinstance(result["score"], float) and isinstance(result["std"], float) and result["std"] > 0
    assert result["label"] in ("high", "low") and result["branch"] == branch
    assert result["adapter"] == (None if branch == "with_comments" else adapter)
    assert result["num_bins"] == bins and result["score_range"] == [1.0, float(bins)]
    # these test models are built from a config: their own image-only head is untrained (adapters count as trained)
    assert result["trained"] is (None if branch == "with_comments" else adapter != "base")
    if distribution:
        assert len(result["distribution"]) == bins and all(isinstance(p, float) for p in result["distribution"])
        assert abs(sum(result["distribution"]) - 1) < 1e-5


# ------------------------------------------------------------------------------------------------- registration
REGISTRATION_SCRIPT = """
import sys
import transformers  # installs its own finder (legacy module aliases)
meta_path = list(sys.meta_path)
{first}
assert sys.meta_path == meta_path, [f for f in sys.meta_path if f not in meta_path]
from transformers.pipelines import PIPELINE_REGISTRY
impl = PIPELINE_REGISTRY.supported_tasks["image-aesthetics"]["impl"]
assert impl.__module__ == "modeling_aesformer.pipeline_aesformer", impl
assert impl is __import__("modeling_aesformer").AesformerAestheticsPipeline
print("ok")
"""


@pytest.mark.parametrize("first", [
    "import modeling_aesformer",  # the usual way
    "import modeling_aesformer.pipeline_aesformer",  # the pipeline module itself (its package is imported first)
    "from transformers import pipeline; import modeling_aesformer",  # transformers.pipelines already imported
])
def test_import_registers_the_task_and_installs_no_import_hook(first):
    code = REGISTRATION_SCRIPT.format(first=first)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-3000:]


# ------------------------------------------------------------------------------------------------------ outputs
def test_output_schema_for_single_dict_list_and_path_inputs(pipe, image_files):
    image = draw_scene(7)
    single = pipe(image)
    check_result(single, "image_only")
    from_path = pipe(image_files[0])
    check_result(from_path, "image_only")
    with_comments = pipe({"image": image, "comments": "lovely soft light, sharp subject"})
    check_result(with_comments, "with_comments")
    listed = pipe({"image": image_files[1], "comments": ["great colour", "the horizon is tilted"]})
    check_result(listed, "with_comments")
    empty = pipe({"image": image, "comments": "   "})  # whitespace-only comments = no comments
    check_result(empty, "image_only")
    assert empty["score"] == pytest.approx(single["score"], abs=1e-6)

    batch = pipe([image, {"image": image, "comments": "nice"}, image_files[2], {"image": image_files[3]}])
    assert isinstance(batch, list) and len(batch) == 4
    assert [r["branch"] for r in batch] == ["image_only", "with_comments", "image_only", "image_only"]
    for r in batch:
        check_result(r, r["branch"])
    assert batch[0]["score"] == pytest.approx(single["score"], abs=1e-6)
    assert pipe(images=image)["score"] == pytest.approx(single["score"], abs=1e-6)
    with pytest.raises(ValueError, match="'image' key"):
        pipe({"picture": image})
    with pytest.raises(ValueError, match="neither an existing file"):
        pipe("/no/such/image.jpg")


def test_scores_equal_the_model_and_std_label_threshold(pipe, model_dir):
    from transformers import AutoProcessor

    image = draw_scene(3)
    processor = AutoProcessor.from_pretrained(model_dir)
    inputs = processor(images=[image, image], comments=[None, "great colour and light"], return_tensors="pt")
    with torch.inference_mode():
        out = pipe.model(**inputs)
    results = [pipe(image), pipe({"image": image, "comments": "great colour and light"})]
    values = torch.arange(1, 11, dtype=torch.float32)
    for i, result in enumerate(results):
        assert result["score"] == pytest.approx(float(out.score[i]), abs=1e-6)
        torch.testing.assert_close(torch.tensor(result["distribution"]), out.distribution[i])
        std = float(((values - out.score[i]) ** 2 @ out.distribution[i]).sqrt())
        assert result["std"] == pytest.approx(std, abs=1e-5)
        assert result["label"] == ("high" if result["score"] > 5.0 else "low")
    assert pipe(image, threshold=0.0)["label"] == "high"
    assert pipe(image, threshold=10.0)["label"] == "low"
    assert "distribution" not in pipe(image, return_distribution=False)


def test_sanitize_parameters_passes_only_what_was_given(pipe):
    assert pipe._sanitize_parameters() == ({}, {}, {})
    assert pipe._sanitize_parameters(timeout=3.0) == ({"timeout": 3.0}, {}, {})
    assert pipe._sanitize_parameters(threshold=4.5, return_distribution=False) == (
        {}, {}, {"threshold": 4.5, "return_distribution": False})
    assert pipe._sanitize_parameters(adapter="base") == ({}, {"adapter": "base"}, {"adapter": "base"})
    with pytest.raises(ValueError, match="unknown adapter"):
        pipe._sanitize_parameters(adapter="ava")
    configured = pipeline("image-aesthetics", model=pipe.model, processor=pipe.processor, threshold=0.0,
                          return_distribution=False)
    result = configured(draw_scene(1))
    assert result["label"] == "high" and "distribution" not in result
    assert "distribution" in configured(draw_scene(1), return_distribution=True)  # call options win


def test_batching_does_not_change_results(pipe):
    inputs = [
        {"image": draw_scene(i, size=(40 + i, 36)), "comments": None if i % 3 else f"nice light {'sharp ' * i}"}
        for i in range(32)
    ]
    alone = pipe(inputs, batch_size=1)  # every sample on its own
    assert alone[0]["score"] == pytest.approx(pipe(inputs[0])["score"], abs=1e-6)
    for batch_size in (7, 32):  # 7: the last batch is partial
        results = pipe(inputs, batch_size=batch_size)
        assert len(results) == 32
        for a, b in zip(alone, results):
            assert a["branch"] == b["branch"]
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)
            torch.testing.assert_close(torch.tensor(a["distribution"]), torch.tensor(b["distribution"]),
                                       atol=1e-6, rtol=1e-5)


def test_datasets_and_generators_stream_through_the_base_class(pipe):
    import datasets

    images = [draw_scene(i) for i in range(5)]
    comments = ["lovely light", None, "too dark", None, "great colour"]
    expected = pipe([{"image": im, "comments": c} for im, c in zip(images, comments)])
    generator = ({"image": im, "comments": c} for im, c in zip(images, comments))
    streamed = list(pipe(generator, batch_size=2))
    dataset = datasets.Dataset.from_dict({"image": images, "comments": comments, "id": list(range(5))})
    from_dataset = list(pipe(dataset.cast_column("image", datasets.Image()), batch_size=3))
    for got in (streamed, from_dataset):
        assert [r["branch"] for r in got] == [r["branch"] for r in expected]
        for a, b in zip(expected, got):
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_url_input_with_timeout(pipe, image_files):
    folder, name = os.path.split(image_files[0])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{name}"
        result = pipe(url, timeout=10)
        with pytest.raises(ValueError, match="cannot load image"):
            pipe(url.replace(name, "missing.jpg"), timeout=10)
    finally:
        server.shutdown()
        server.server_close()
    assert result["score"] == pytest.approx(pipe(image_files[0])["score"], abs=1e-6)


def test_processor_falls_back_to_the_model_folder(model_dir):
    model = AutoModel.from_pretrained(model_dir)
    scorer = pipeline("image-aesthetics", model=model)  # the factory loads no processor for a model object
    assert isinstance(scorer.processor, AesformerProcessor) and scorer.tokenizer is not None
    assert scorer({"image": draw_scene(0), "comments": "nice"})["branch"] == "with_comments"
    by_path = pipeline("image-aesthetics", model=str(model_dir))  # no custom_pipelines: the registered class
    assert type(by_path).__module__ == "modeling_aesformer.pipeline_aesformer"
    assert by_path(draw_scene(0))["score"] == pytest.approx(scorer(draw_scene(0))["score"], abs=1e-6)
    torch.manual_seed(0)
    in_memory = AesformerModel(AesformerConfig.from_preset("tiny"))
    with pytest.raises(ValueError, match="needs the model's processor"):
        pipeline("image-aesthetics", model=in_memory)
    image_only = pipeline("image-aesthetics", model=in_memory,
                          image_processor=AesformerImageProcessor(size={"height": 32, "width": 32}))
    check_result(image_only(draw_scene(0)), "image_only")
    with pytest.raises(ValueError, match="no tokenizer"):
        image_only({"image": draw_scene(0), "comments": "nice"})


# ----------------------------------------------------------------------------------------------------- adapters
@pytest.fixture(scope="module")
def adapter_setup(model_dir, tmp_path_factory):
    from modeling_aesformer.adapters import add_dataset_adapter, save_adapters

    folder = tmp_path_factory.mktemp("with_adapters") / "model"
    tiny_model_folder(folder)
    model = add_dataset_adapter(AutoModel.from_pretrained(folder), "ava", dataset="AVA")
    model = add_dataset_adapter(model, "photonet", num_score_bins=7, score_range=(1, 7), threshold=4.0,
                                dataset="Photo.net")
    perturb(model, "ava", 1)
    perturb(model, "photonet", 2)
    save_adapters(model.eval(), folder)
    return model.eval(), folder


def test_adapter_all_gives_one_result_per_adapter_in_one_call(adapter_setup):
    model, _ = adapter_setup
    scorer = pipeline("image-aesthetics", model=model)
    image = draw_scene(5)
    all_results = scorer(image, adapter="all")
    assert [r["adapter"] for r in all_results] == ["base", "ava", "photonet"]
    check_result(all_results[0], "image_only", "base")
    check_result(all_results[1], "image_only", "ava")
    check_result(all_results[2], "image_only", "photonet", bins=7)
    assert 1 <= all_results[2]["score"] <= 7
    assert all_results[2]["label"] == ("high" if all_results[2]["score"] > 4.0 else "low")
    for result in all_results:
        alone = scorer(image, adapter=result["adapter"])
        assert isinstance(alone, dict) and alone["score"] == pytest.approx(result["score"], abs=1e-6)
    assert len({round(r["score"], 5) for r in all_results}) == 3  # the adapters really differ
    model.set_adapter("ava")
    assert scorer(image)["adapter"] == "ava"  # default: the active adapter
    model.set_adapter("photonet")
    assert scorer(image)["adapter"] == "photonet"
    pair = scorer([image, image], adapter=["photonet", "base"])
    assert [[r["adapter"] for r in per_image] for per_image in pair] == [["photonet", "base"]] * 2
    # with comments every adapter's answer comes from the shared with-comments branch
    commented = scorer({"image": image, "comments": "great light"}, adapter="all")
    assert {r["branch"] for r in commented} == {"with_comments"} and {r["adapter"] for r in commented} == {None}
    assert len({round(r["score"], 6) for r in commented}) == 1 and len(commented[2]["distribution"]) == 10
    thresholds = scorer(image, adapter="all", threshold={"photonet": 0.0})
    assert thresholds[2]["label"] == "high"
    with pytest.raises(ValueError, match="unknown adapter"):
        scorer(image, adapter="jas")


def test_the_scale_comes_with_each_answer(adapter_setup):
    """One batch answered on two scales (comments: 10 bins; the photonet adapter: 7): each result's num_bins,
    score_range, std and (on request) bin_values are those of the head that answered it."""
    model, _ = adapter_setup
    scorer = pipeline("image-aesthetics", model=model)
    inputs = [{"image": draw_scene(1), "comments": "nice colour"}, draw_scene(2)]
    plain = scorer(inputs, adapter="photonet", batch_size=2)
    results = scorer(inputs, adapter="photonet", batch_size=2, return_bin_values=True)
    assert [list(r) for r in plain] == [KEYS, KEYS]  # the default dict is unchanged
    for result, bins in zip(results, (10, 7)):
        assert list(result) == KEYS[:5] + ["bin_values"] + KEYS[5:]
        assert result["bin_values"] == [float(v) for v in range(1, bins + 1)] and result["num_bins"] == bins
        assert result["score_range"] == [1.0, float(bins)]
        values, p = np.array(result["bin_values"]), np.array(result["distribution"])
        assert result["score"] == pytest.approx(float(p @ values), abs=1e-5)
        assert result["std"] == pytest.approx(float(np.sqrt(p @ (values - result["score"]) ** 2)), abs=1e-5)


def test_adapter_batches_mixing_scales_are_invariant(adapter_setup):
    model, _ = adapter_setup
    scorer = pipeline("image-aesthetics", model=model)
    inputs = [{"image": draw_scene(i), "comments": "nice colour" if i % 2 else None} for i in range(6)]
    one = scorer(inputs, adapter="all", batch_size=1)
    many = scorer(inputs, adapter="all", batch_size=6)
    for a_list, b_list in zip(one, many):
        for a, b in zip(a_list, b_list):
            assert a["adapter"] == b["adapter"] and a["branch"] == b["branch"] and a["num_bins"] == b["num_bins"]
            assert len(a["distribution"]) == len(b["distribution"])
            assert a["score"] == pytest.approx(b["score"], abs=1e-5)


def test_adapters_of_a_folder_documented_routes(adapter_setup):
    from modeling_aesformer.adapters import load_adapters

    model, folder = adapter_setup
    image = draw_scene(9)
    expected = pipeline("image-aesthetics", model=model)(image, adapter="all")
    # 1. with the package: load_adapters(AutoModel.from_pretrained(dir), dir), then a model object
    peft_model = load_adapters(AutoModel.from_pretrained(folder), folder).eval()
    via_package = pipeline("image-aesthetics", model=peft_model)(image, adapter="all")
    # 2. explicit opt-in: the pipeline loads them with transformers' PEFT integration (what Hub users do)
    via_pipeline = pipeline("image-aesthetics", model=AutoModel.from_pretrained(folder), load_adapters=True)
    assert sorted(via_pipeline.model.peft_config) == ["ava", "photonet"]
    via_integration = via_pipeline(image, adapter="all")
    for got in (via_package, via_integration):
        assert [r["adapter"] for r in got] == ["base", "ava", "photonet"]
        for a, b in zip(expected, got):
            assert a["score"] == pytest.approx(b["score"], abs=1e-6)
            assert len(a["distribution"]) == len(b["distribution"])
    # without either, the adapters are unknown to a plain model
    with pytest.raises(ValueError, match="unknown adapter"):
        pipeline("image-aesthetics", model=AutoModel.from_pretrained(folder))(image, adapter="ava")


def test_package_attribute_gives_the_registered_class():
    cls = modeling_aesformer.AesformerAestheticsPipeline
    from transformers.pipelines import PIPELINE_REGISTRY

    assert PIPELINE_REGISTRY.supported_tasks["image-aesthetics"]["impl"] is cls
    assert modeling_aesformer.register_pipeline() is cls  # idempotent
    assert PIPELINE_REGISTRY.supported_tasks["image-aesthetics"]["impl"] is cls
    with pytest.raises(AttributeError):
        modeling_aesformer.NoSuchThing  # noqa: B018


def test_return_attention_gives_maps_equal_to_explain(adapter_setup, image_files):
    import numpy as np
    from transformers import AutoProcessor, pipeline

    from modeling_aesformer.explanation import explain

    model, folder = adapter_setup
    processor = AutoProcessor.from_pretrained(folder)
    scorer = pipeline("image-aesthetics", model=model)
    inputs = [image_files[0], {"image": image_files[1], "comments": "lovely light and a sharp subject"}]
    results = scorer(inputs, adapter=["base", "photonet"], return_attention=True, batch_size=2)
    grid = (2, 2)  # tiny preset: the last Swin stage is 2x2
    for result in results[0] + results[1]:
        heat = result["attention_map"]
        assert heat.shape == grid and heat.min() >= 0 and abs(heat.max() - 1) < 1e-6
    assert "word_attention" not in results[0][0]
    words = results[1][0]["word_attention"]
    assert [w for w, _ in words][:2] == ["lovely", "light"] and abs(sum(x for _, x in words) - 1) < 1e-5
    # the same maps as the package's explain() (max-normalised)
    from PIL import Image

    image = Image.open(image_files[0]).convert("RGB")
    reference = explain(model, processor, image, adapter="photonet", normalize="max")
    np.testing.assert_allclose(results[0][1]["attention_map"], reference.heatmap, atol=1e-5)
    # the row with comments, scored in a batch mixing both branches (padded to the longer one), maps as alone
    commented = explain(model, processor, Image.open(image_files[1]).convert("RGB"),
                        comments="lovely light and a sharp subject", normalize="max")
    np.testing.assert_allclose(results[1][0]["attention_map"], commented.heatmap, atol=1e-5)
    assert [w for w, _ in words] == [w for w, _ in commented.words]
    np.testing.assert_allclose([x for _, x in words], [x for _, x in commented.words], atol=1e-5)
    assert "attention_map" not in scorer(image_files[0])  # only on request


def test_left_padding_scores_as_right_padding(model_dir):
    """The model reads [CLS] at column 0: a tokenizer that pads on the left must not change a score (processor +
    model, and the pipeline); asking the processor call for left padding is an error naming `padding_side`."""
    from transformers import AutoProcessor

    image = draw_scene(2)
    comments = [None, "great colour and light", "too dark"]  # different lengths: the short rows are padded
    right = AutoProcessor.from_pretrained(model_dir)
    left = AutoProcessor.from_pretrained(model_dir)
    left.tokenizer.padding_side = "left"
    left.tokenizer.init_kwargs["padding_side"] = "left"  # as saved in a tokenizer_config.json
    model = AutoModel.from_pretrained(model_dir).eval()
    scores = {}
    for name, processor in (("right", right), ("left", left)):
        inputs = processor(images=[image] * 3, comments=comments, return_tensors="pt")
        with torch.inference_mode():
            scores[name] = model(**inputs).score
        pipe = pipeline("image-aesthetics", model=model, processor=processor)
        scores[name + "-pipeline"] = torch.tensor([pipe({"image": image, "comments": c})["score"] for c in comments])
    torch.testing.assert_close(scores["left"], scores["right"], rtol=0, atol=0)
    torch.testing.assert_close(scores["left-pipeline"], scores["right-pipeline"], rtol=0, atol=0)
    torch.testing.assert_close(scores["right-pipeline"], scores["right"], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="padding_side"):
        right(images=[image], comments=["too dark"], padding_side="left")


def test_pipeline_names_the_bad_item_of_a_list(model_dir, hostile_dir):
    """Documented choice, as transformers' image-classification pipeline: a bad item raises, naming it."""
    scorer = pipeline("image-aesthetics", model=AutoModel.from_pretrained(model_dir))
    good = [str(hostile_dir / "cmyk.jpg"), str(hostile_dir / "animated.webp")]
    results = scorer(good)
    assert len(results) == 2 and all(1 <= r["score"] <= 10 for r in results)
    bad = str(hostile_dir / "truncated.png")
    with pytest.raises(ValueError) as info:
        scorer([good[0], {"image": bad, "comments": "nice"}, good[1]], batch_size=2)
    message = str(info.value)
    assert message.startswith(f"inputs[1] {bad!r}: ") and "truncated" in message and "images[0]" not in message
    with pytest.raises(ValueError, match=r"^input '.*bomb\.png': .*DecompressionBombError"):
        scorer(str(hostile_dir / "bomb.png"))
    with pytest.raises(ValueError, match=r"^inputs\[0\] '.*zero_bytes\.jpg'.*cannot identify image file"):
        scorer([str(hostile_dir / "zero_bytes.jpg")])
    assert scorer(good) == results  # the pipeline is still usable after a failure


def test_threads_sharing_one_pipeline_get_the_sequential_results(model_dir_with_adapters):
    from modeling_aesformer.adapters import load_adapters

    model_dir = model_dir_with_adapters
    model = load_adapters(AutoModel.from_pretrained(model_dir), model_dir).eval()
    scorer = pipeline("image-aesthetics", model=model)
    images = [draw_scene(i, size=(40, 30)) for i in range(4)]
    jobs = [
        ({"inputs": images[:2]}, {}),
        ({"inputs": [{"image": images[2], "comments": "lovely light"}, images[3]]}, {"adapter": "photonet"}),
        ({"inputs": images[1:3]}, {"adapter": "base"}),
        ({"inputs": [images[0], {"image": images[1], "comments": ["too dark", "sharp subject"]}]},
         {"adapter": "all", "threshold": 6.0}),
        ({"inputs": images}, {"adapter": "ava", "batch_size": 3}),
    ]
    active = model.active_adapter
    sequential = [scorer(job["inputs"], **kwargs) for job, kwargs in jobs]
    results, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def work(k):
        job, kwargs = jobs[k]
        try:
            barrier.wait()
            results[k] = [scorer(job["inputs"], **kwargs) for _ in range(3)]
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(f"job {k}: {type(err).__name__}: {err}")

    run_threads(work, len(jobs))
    assert not errors, errors
    for k, want in enumerate(sequential):
        assert all(got == want for got in results[k]), k
    assert model.active_adapter == active  # the shared model's adapter state is as it was
