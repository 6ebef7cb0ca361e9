"""Evaluation of a model on a dataset split: `predict` (distributions, scores and targets over a loader),
`metrics_from_predictions` (the aesthetic metrics of `aesformer_training.evaluation`) and `evaluate_branches` (both
branches, as `aesformer eval` reports them); the loop validates and tests with the first two."""

import torch


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
    return rows.select([i for i, c in enumerate(rows["comments"]) if str(c or "").strip()])


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
    return metrics


def evaluate_branches(model, processor, rows, spec, adapter=None, batch_size=32, num_workers=0,
                      branches=("with_comments", "image_only")):
    """Metrics of the with-comments branch (rows that have comments) and of the image-only branch (every row, with
    dataset adapter `adapter` when given) on `rows` (a dataset split), for the names in `branches`. A branch whose
    bins do not match the dataset's scale is left out with a reason."""
    from aesformer_training.collator import AestheticCollator

    results, bin_values = {}, spec.bin_values.tolist()
    with_comments = rows_with_comments(rows)
    base_bins = model.config.num_score_bins  # a PeftModel forwards `config` to the base model
    plans = [("with_comments", with_comments, True, None), ("image_only", rows, False, adapter)]
    unknown = set(branches) - {plan[0] for plan in plans}
    if unknown:
        raise ValueError(f"unknown branches {sorted(unknown)}; known: with_comments, image_only")
    for branch, subset, include_comments, branch_adapter in (plan for plan in plans if plan[0] in branches):
        if len(subset) == 0:
            results[branch] = {"skipped": "no rows"}
            continue
        if branch == "with_comments" and base_bins != spec.num_bins:
            results[branch] = {"skipped": f"the VL heads have {base_bins} bins, the dataset {spec.num_bins}"}
            continue
        loader = torch.utils.data.DataLoader(
            IndexedRows(subset), batch_size=batch_size, num_workers=num_workers,
            collate_fn=AestheticCollator(processor, include_comments=include_comments),
        )
        pred = predict(model, loader, adapter=branch_adapter)
        if pred["distribution"].shape[-1] < spec.num_bins or not bool(pred["used_comments"].all() == include_comments):
            raise ValueError(f"{branch}: the model answered with {pred['distribution'].shape[-1]} bins on the wrong "
                             f"branch for a {spec.num_bins}-bin dataset")
        results[branch] = metrics_from_predictions(pred, bin_values)
    return results


__all__ = ["IndexedRows", "evaluate_branches", "metrics_from_predictions", "predict", "rows_with_comments"]
