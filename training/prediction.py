"""Evaluation of a model on a dataset split: `predict` (distributions, scores and targets over a loader),
`metrics_from_predictions` (the aesthetic metrics of `aesformer_training.evaluation`) and `evaluate_branches` (both
branches and the image-only branch on the with-comments images, scored through `modeling_aesformer.scoring` as
`aesformer score` scores them, with per-image predictions; as `aesformer eval` reports them); the loop validates and
tests with the first two."""

import torch

from aesformer_processing.processing_aesformer import has_comment_text


class IndexedRows(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` with their index (the augmentation seed derives from it)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return {**self.rows[index], "index": index}


def rows_with_comments(rows):
    """The rows of a dataset split that have comments."""
    return rows.select([i for i, c in enumerate(rows["comments"]) if has_comment_text(c)])


@torch.no_grad()
def predict(model, loader, accelerator=None, adapter=None):
    """Distributions, scores and targets over a loader (gathered across processes when `accelerator` is given),
    with each row's scale as the model's output gives it: `threshold` [n] and `bin_values` [n, bins] (NaN past
    the answering head's last bin), and `used_comments` [n] (bool). `adapter`: the dataset adapter of the
    image-only rows (None = the active one)."""
    model.eval()
    preds, scores, targets, used, thresholds, values = [], [], [], [], [], []
    for batch in loader:
        if batch is None:
            continue
        inputs = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model(**inputs, adapter=adapter) if adapter is not None else model(**inputs)
        items = (out.distribution, out.score, batch["labels"], out.used_comments.bool(), out.threshold,
                 out.bin_values)
        if accelerator is not None:
            items = accelerator.gather_for_metrics(items)
        for bucket, item in zip((preds, scores, targets, used, thresholds, values), items):
            bucket.append(item.float().cpu() if item.dtype != torch.bool else item.cpu())
    if not preds:
        raise ValueError("no sample could be evaluated")
    width = max(d.shape[-1] for d in preds)  # batches answered on heads of different widths
    preds = [torch.nn.functional.pad(d, (0, width - d.shape[-1])) for d in preds]
    values = [torch.nn.functional.pad(v, (0, width - v.shape[-1]), value=float("nan")) for v in values]
    return {"distribution": torch.cat(preds), "score": torch.cat(scores), "labels": torch.cat(targets),
            "used_comments": torch.cat(used), "threshold": torch.cat(thresholds), "bin_values": torch.cat(values)}


def metrics_from_predictions(pred, bin_values):
    """Metrics of `predict`'s rows against their labels on the dataset's `bin_values`; a row counts as high by
    the threshold of the head that answered it."""
    import numpy as np

    from aesformer_training.evaluation import compute_metrics

    target = pred["labels"] / pred["labels"].sum(-1, keepdim=True)
    k = target.shape[-1]
    answered_bins = pred["bin_values"].isfinite().sum(-1)
    wrong = (answered_bins != k).nonzero().flatten().tolist()
    if wrong:
        raise ValueError(f"{len(wrong)} of {len(answered_bins)} rows (e.g. row {wrong[0]}) were answered by a head with "
                         f"{int(answered_bins[wrong[0]])} bins, but the labels have {k}: evaluate them with a model "
                         "or dataset adapter on the dataset's scale")
    thresholds = pred["threshold"].numpy()
    metrics = compute_metrics(
        pred_distributions=pred["distribution"][:, :k].numpy(), true_distributions=target.numpy(),
        bin_values=list(bin_values), threshold=float(thresholds[0]),
    )
    if (thresholds != thresholds[0]).any():  # rows answered by heads with different thresholds: each its own
        values = np.asarray(bin_values, dtype=np.float64)
        predicted, true = pred["distribution"][:, :k].double().numpy() @ values, target.double().numpy() @ values
        metrics["accuracy"] = float(np.mean((predicted > thresholds) == (true > thresholds)))
    # beside the accuracy: the accuracy of always answering the more common class
    true = target.double().numpy() @ np.asarray(bin_values, dtype=np.float64)
    high = float(np.mean(true > thresholds))
    metrics["majority_baseline_accuracy"] = max(high, 1.0 - high)
    if (thresholds == thresholds[0]).all():
        metrics["threshold"] = float(thresholds[0])
    return metrics


# the image-only branch on exactly the images the with-comments branch is measured on (a paired comparison)
PAIRED_BRANCH = "image_only_on_with_comments_set"
BRANCHES = ("with_comments", "image_only", PAIRED_BRANCH)
# a prediction whose scores spread less than this part of the labels' spread is reported as degenerate
DEGENERATE_STD_FRACTION = 0.1


def branch_scale(model, branch, adapter=None):
    """`(answering adapter as `resolve_adapters` runs it, {"num_bins", "score_range", "threshold"})` of a branch:
    the with-comments heads' scale, or that of the image-only answer `adapter` (None = the model's default)."""
    from modeling_aesformer.adapter_weights_aesformer import base_model
    from modeling_aesformer.adapters import adapter_info
    from modeling_aesformer.pipeline_aesformer import resolve_adapters

    (name,), _ = resolve_adapters(model, adapter)
    if branch == "with_comments":
        config = base_model(model).config
        return name, {"num_bins": int(config.num_score_bins),
                      "score_range": [float(v) for v in config.score_range],
                      "threshold": float(config.score_threshold)}
    info = adapter_info(model, name)
    return name, {"num_bins": int(info["num_score_bins"]), "score_range": [float(v) for v in info["score_range"]],
                  "threshold": float(info["threshold"])}


def majority_baseline_accuracy(true_scores, threshold):
    """The accuracy of always answering the more common class of the truth (high iff score > threshold)."""
    import numpy as np

    high = float(np.mean(np.asarray(true_scores, dtype=np.float64) > threshold))
    return max(high, 1.0 - high)


def degenerate_warnings(branch, pred_scores, true_scores, threshold):
    """Sentences naming what makes a branch's predictions degenerate (nearly constant scores, one class only);
    empty when they are not."""
    import numpy as np

    pred, true = np.asarray(pred_scores, dtype=np.float64), np.asarray(true_scores, dtype=np.float64)
    found = []
    if len(pred) >= 2 and pred.std() < DEGENERATE_STD_FRACTION * true.std():
        found.append(f"{branch}: the predicted scores hardly vary (std {pred.std():.4f}, range {pred.min():.3f}.."
                     f"{pred.max():.3f}) against the labels' std {true.std():.4f}: the correlations mean little")
    high = pred > threshold
    if len(pred) >= 2 and (high.all() or not high.any()):
        share = float(np.mean(true > threshold))
        found.append(f"{branch}: every prediction is {'high' if high.all() else 'low'} (threshold {threshold:g}): "
                     f"the accuracy is the share of {'high' if high.all() else 'low'} images "
                     f"({share if high.all() else 1 - share:.4f}), not a skill")
    if len(true) >= 2 and ((true > threshold).all() or not (true > threshold).any()):
        found.append(f"{branch}: every test image is {'high' if (true > threshold).all() else 'low'} "
                     f"(threshold {threshold:g}): the accuracy measures one class only")
    return found


def evaluate_branches(model, processor, rows, spec, adapter=None, batch_size=32, num_workers=0,
                      branches=("with_comments", "image_only"), reduced_decode=False, predictions=None,
                      warnings=None, skipped=None):
    """Metrics of the with-comments branch (rows that have comments), of the image-only branch (every row, with
    dataset adapter `adapter` when given) and, as `PAIRED_BRANCH`, of the image-only branch on the rows that have
    comments, on `rows` (a dataset split), for the names in `branches`. The images go through the scoring module
    (`modeling_aesformer.scoring.iter_scored_batches`, as `aesformer score` scores them; `reduced_decode`: its
    reduced JPEG decode, off by default so the numbers come from the full images).

    Each branch's metrics carry its scale (`threshold`, `num_bins`, `score_range`) and the accuracy of always
    answering the majority class (`majority_baseline_accuracy`). A with-comments branch whose bins do not match the
    dataset's scale is left out with a reason; an image-only answer on another scale is a `ValueError`.

    `predictions` (a list): gets one dict per image and branch (with_comments / image_only; the paired branch is
    the image-only rows that have comments): `id`, `branch`, `adapter`, `trained`, `has_comments`, `true_score`,
    `score`, `std`, `distribution`, `threshold`, `label`, `true_label`, `num_bins`, `score_range`, `path`, `error`.
    `warnings` (a list): gets a sentence per degenerate prediction (`degenerate_warnings`). `skipped` (a list): gets
    `(id, reason)` per image that could not be read (left out of the metrics)."""
    import numpy as np

    from aesformer_training.evaluation import compute_metrics
    from modeling_aesformer.scoring import iter_scored_batches

    unknown = set(branches) - set(BRANCHES)
    if unknown:
        raise ValueError(f"unknown branches {sorted(unknown)}; known: {', '.join(BRANCHES)}")
    results, bin_values = {}, spec.bin_values.tolist()
    has_comments = [has_comment_text(c) for c in rows["comments"]]
    ids, images, comments, labels = rows["id"], rows["image"], rows["comments"], rows["labels"]
    true_scores = [float(np.asarray(label, dtype=np.float64) @ spec.bin_values / np.sum(label)) for label in labels]
    runs = {"with_comments": "with_comments" in branches,
            "image_only": "image_only" in branches or PAIRED_BRANCH in branches}
    scored = {}
    for branch in ("with_comments", "image_only"):
        if not runs[branch]:
            continue
        subset = [i for i in range(len(ids)) if has_comments[i] or branch == "image_only"]
        if not subset:
            continue
        name, scale = branch_scale(model, branch, adapter)
        if branch == "with_comments" and scale["num_bins"] != spec.num_bins:
            results[branch] = {"skipped": f"the VL heads have {scale['num_bins']} bins, the dataset {spec.num_bins}"}
            continue
        if branch == "image_only" and scale["num_bins"] != spec.num_bins:
            raise ValueError(f"image_only: the model answered with {scale['num_bins']} bins (adapter {name!r}) "
                             f"for a {spec.num_bins}-bin dataset: evaluate with a dataset adapter on its scale "
                             "(`aesformer eval --adapter NAME`, or make it the default with `aesformer set-default`)")
        records = [(images[i], comments[i] if branch == "with_comments" else None) for i in subset]
        answers = {}
        for batch in iter_scored_batches(model, processor, records, [name], batch_size, num_workers,
                                         reduced_decode=reduced_decode):
            for index, answer in batch.items():
                answers[subset[index]] = answer[0]
        scored[branch] = (subset, answers, scale)
        for i in subset:
            row = answers[i]
            if row.get("error"):
                if skipped is not None:
                    skipped.append((ids[i], row["error"]))
                continue
            if row["branch"] != branch or row["num_bins"] != spec.num_bins:
                raise ValueError(f"{branch}: the model answered image {ids[i]!r} with {row['num_bins']} bins on the "
                                 f"{row['branch']} branch for a {spec.num_bins}-bin dataset")
        if predictions is not None:
            for i in subset:
                row = answers[i]
                score = row.get("score")
                predictions.append({
                    "id": ids[i], "branch": branch, "adapter": row.get("adapter"), "trained": row.get("trained"),
                    "has_comments": has_comments[i], "true_score": true_scores[i], "score": score,
                    "std": row.get("std"), "distribution": row.get("distribution"), "threshold": scale["threshold"],
                    "label": row.get("label"), "true_label": "high" if true_scores[i] > scale["threshold"] else "low",
                    "num_bins": row.get("num_bins"), "score_range": row.get("score_range"), "path": images[i],
                    "error": row.get("error"),
                })
    for branch in (b for b in BRANCHES if b in branches):
        source = "with_comments" if branch == "with_comments" else "image_only"
        if "skipped" in results.get(source, {}):  # with its reason
            results[branch] = results[source]
            continue
        if source not in scored:
            results[branch] = {"skipped": "no rows"}
            continue
        subset, answers, scale = scored[source]
        kept = [i for i in subset if not answers[i].get("error") and (branch != PAIRED_BRANCH or has_comments[i])]
        if not kept:
            results[branch] = {"skipped": "no rows" if branch == PAIRED_BRANCH and not any(has_comments)
                               else "no image could be read"}
            continue
        metrics = compute_metrics(
            pred_distributions=[answers[i]["distribution"] for i in kept],
            true_distributions=[labels[i] for i in kept], bin_values=bin_values, threshold=scale["threshold"],
        )
        truth = [true_scores[i] for i in kept]
        metrics["majority_baseline_accuracy"] = majority_baseline_accuracy(truth, scale["threshold"])
        metrics.update(scale)
        results[branch] = metrics
        if warnings is not None:
            predicted = np.asarray([answers[i]["distribution"] for i in kept]) @ np.asarray(bin_values)
            warnings.extend(degenerate_warnings(branch, predicted, truth, scale["threshold"]))
    return results


def _saved_scales(model_dir):
    """`(default adapter or None, {name: (num_bins, score_range, dataset)})` of a model folder: "base" is the
    model's own image-only head, every other name a saved adapter's `aesformer_adapter.json`."""
    import json
    import os

    from modeling_aesformer.adapter_weights_aesformer import ADAPTER_META_FILE, BASE_ADAPTER, adapter_folder
    from modeling_aesformer.adapters import list_adapters

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    bins = int(config.get("num_score_bins", 10))
    scales = {BASE_ADAPTER: (bins, [float(v) for v in config.get("score_range") or (1, bins)], None)}
    for name in list_adapters(model_dir):
        path = os.path.join(adapter_folder(model_dir, name), ADAPTER_META_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                meta = json.load(handle)
            if "num_score_bins" in meta and "score_range" in meta:
                scales[name] = (int(meta["num_score_bins"]), [float(v) for v in meta["score_range"]],
                                meta.get("dataset"))
    return config.get("default_adapter"), scales, bool(config.get("image_only_trained", False))


def fitting_adapter(model_dir, spec, asked=None):
    """`(adapter, note)`: which image-only answer `aesformer eval` uses on data of scale `spec`. `asked` (the
    `--adapter` value) or the model's default when its scale (bins, score range) fits the data, with no note; else
    the one saved adapter that fits (the one of the dataset's name first), with a note saying so. A `ValueError`
    naming ``--adapter NAME`` and ``aesformer set-default`` when none or several fit, or when `asked` does not."""
    from modeling_aesformer.adapter_weights_aesformer import BASE_ADAPTER

    default, scales, base_trained = _saved_scales(model_dir)

    def fits(name):
        bins, score_range, _ = scales.get(name, (None, None, None))
        return bins == spec.num_bins and all(abs(a - b) < 1e-6 for a, b in zip(score_range, spec.score_range))

    def describe(name):
        bins, (low, high), _ = scales[name]
        return f"{name!r} ({bins} bins, {low:g}..{high:g})"

    wanted = f"{spec.num_bins} bins, {spec.score_range[0]:g}..{spec.score_range[1]:g}"
    # the model's own image-only head is a candidate only when training or conversion produced it
    fitting = [name for name in scales if fits(name) and (name != BASE_ADAPTER or base_trained)]
    listed = ", ".join(describe(name) for name in fitting) or "none"
    if asked is not None:
        if asked not in scales or fits(asked):
            return asked, None
        raise ValueError(f"--adapter {asked}: it answers on {describe(asked)[len(repr(asked)) + 1:]}, the "
                         f"{spec.name} data on {wanted}; pass --adapter NAME with an adapter on the data's scale "
                         f"(fitting: {listed})")
    current = default if default in scales else BASE_ADAPTER
    if fits(current):
        return None, None
    same_dataset = [name for name in fitting if str(scales[name][2]).lower() == spec.name.lower()]
    choice = same_dataset if len(same_dataset) == 1 else fitting
    if len(choice) == 1:
        return choice[0], (f"the model's default image-only answer {describe(current)} is not on the {spec.name} "
                           f"data's scale ({wanted}): evaluating with adapter {describe(choice[0])} (--adapter "
                           f"{choice[0]}); `aesformer set-default {model_dir} {choice[0]}` makes it the default")
    raise ValueError(f"the model's default image-only answer {describe(current)} is not on the {spec.name} data's "
                     f"scale ({wanted}) and {'no' if not fitting else 'more than one'} saved adapter fits "
                     f"(fitting: {listed}): pass --adapter NAME, or make one the default with "
                     f"`aesformer set-default {model_dir} NAME`")


PREDICTION_COLUMNS = ["id", "branch", "adapter", "trained", "has_comments", "true_score", "score", "std",
                      "threshold", "label", "true_label", "num_bins", "score_range", "distribution", "path", "error"]


def write_predictions(path, predictions):
    """`evaluate_branches`' per-image predictions as CSV (`PREDICTION_COLUMNS`): the scoring module's own row
    format (`modeling_aesformer.scoring.file_row`: distributions rounded the same way, lists as JSON, booleans as
    true/false), plus the image id, the truth and the threshold."""
    import csv
    import json

    from modeling_aesformer.scoring import file_row

    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        for row in predictions:
            flat = {**row, **{k: v for k, v in file_row(row).items() if k in row}}
            for key in ("distribution", "score_range"):
                if isinstance(flat.get(key), list):
                    flat[key] = json.dumps(flat[key])
            for key in ("trained", "has_comments"):
                if isinstance(flat.get(key), bool):
                    flat[key] = "true" if flat[key] else "false"
            writer.writerow({key: "" if flat.get(key) is None else flat[key] for key in PREDICTION_COLUMNS})
    return path


__all__ = ["BRANCHES", "DEGENERATE_STD_FRACTION", "IndexedRows", "PAIRED_BRANCH", "branch_scale",
           "PREDICTION_COLUMNS", "degenerate_warnings", "evaluate_branches", "fitting_adapter",
           "majority_baseline_accuracy", "write_predictions", "metrics_from_predictions",
           "predict", "rows_with_comments"]
