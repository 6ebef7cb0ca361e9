"""Safe loading: every torch.load in the project uses weights_only=True and nothing unpickles; a malicious pickle
(an original checkpoint, a model folder's weights, an adapter's weights) is refused by the loaders
(`modeling_aesformer.loading`, `convert_original`, `adapters`) and its payload never runs."""

import pickle
import shutil

import pytest
import torch
from transformers import AutoModel

from modeling_aesformer.loading import ModelLoadError, load_model

from _helpers import REPO_ROOT as REPO, Payload, project_sources

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_legacy_load_uses_weights_only_and_nothing_unpickles():
    import ast

    problems = []
    for path in project_sources():  # the four packages and bench/
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = getattr(func, "attr", getattr(func, "id", ""))
            owner = getattr(getattr(func, "value", None), "id", "")
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "load" and owner == "torch":
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if owner in ("pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib") and name.startswith("load"):
                problems.append(f"{where}: {owner}.{name}")
            flag = keywords.get("allow_pickle")
            if isinstance(flag, ast.Constant) and flag.value is True:
                problems.append(f"{where}: allow_pickle=True")
            flag = keywords.get("weights_only")
            if isinstance(flag, ast.Constant) and flag.value is False:
                problems.append(f"{where}: weights_only=False")
    assert not problems, problems


def test_a_malicious_pickle_is_refused_everywhere_and_never_runs(model_dir, tmp_path):
    from modeling_aesformer.adapters import load_adapters
    from modeling_aesformer.convert_original import ConversionError, convert_original_checkpoint, \
        load_original_state_dict

    # the payload is live: plain unpickling runs it
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.is_dir()

    marker = tmp_path / "payload-ran"
    checkpoint = {"model": {"visual_encoder.embeddings.weight": torch.zeros(2), "evil": Payload(marker)}}
    zipped, legacy = tmp_path / "aesformer_t.pth", tmp_path / "aesformer_t_legacy.pt"
    torch.save(checkpoint, zipped)
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(ConversionError, match=r"weights_only=True\) refused the file"):
            load_original_state_dict(path)
        with pytest.raises(ConversionError, match="refused"):
            convert_original_checkpoint(path, tmp_path / "converted")
        assert not (tmp_path / "converted").exists()

    # a model folder whose weights are a pickle: the package's loaders want safetensors, transformers refuses it
    bad_model = tmp_path / "bad-model"
    shutil.copytree(model_dir, bad_model)
    (bad_model / "model.safetensors").unlink()
    torch.save({"evil": Payload(marker)}, bad_model / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_model(str(bad_model), None, log=lambda *a: None)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        AutoModel.from_pretrained(bad_model)

    # an adapter folder with a pickled adapter_model.bin
    adapter = tmp_path / "with-adapter" / "adapters" / "evil"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "aesformer_adapter.json").write_text('{"num_score_bins": 10}')
    torch.save({"evil": Payload(marker)}, adapter / "adapter_model.bin")
    with pytest.raises(ValueError, match="no adapter_model.safetensors.*adapter_model.bin.*only from safetensors"):
        load_adapters(AutoModel.from_pretrained(model_dir), tmp_path / "with-adapter")
    assert not marker.exists()
