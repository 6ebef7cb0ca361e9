"""transformers.Trainer on two processes (run by tests/test_trainer.py through `accelerate launch`, gloo on CPU).

Trainer's defaults with gradient checkpointing (`find_unused_parameters=False`), a sequential sampler so that in the
first step one rank gets only samples with comments and the other only image-only ones, then `evaluate` with
`compute_metrics` over batches of different mixes. Each rank writes `rank<N>.json` into OUT (what its batches held,
a checksum of its parameters after training); rank 0 also writes `result.json`.

    python -m accelerate.commands.launch --multi_gpu --num_processes 2 ... trainer_ddp.py DATA MODEL VOCAB OUT
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _helpers import trainer_collator, trainer_processor  # noqa: E402
from aesformer_training.loaders import load_generic  # noqa: E402
from modeling_aesformer import AesformerModel  # noqa: E402


def main(data_dir, model_dir, vocab, out):
    from transformers import Trainer, TrainingArguments

    torch.set_num_threads(1)
    data, _ = load_generic(data_dir)
    # Batches of 2 in this order go to rank 0, rank 1, rank 0, ...: step 1 = rank 0 comments only, rank 1 image-only.
    train = data["train"].select([1, 2, 0, 5, 3, 10, 4, 15])
    # Evaluation batches: rank 0 image-only then mixed, rank 1 comments only then mixed.
    evaluation = data["train"].select([0, 5, 1, 2, 3, 10, 4, 15])
    model = AesformerModel.from_pretrained(model_dir)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    collate = trainer_collator(trainer_processor(vocab))
    seen = []

    def recording_collator(rows):
        batch = collate(rows)
        seen.append(batch["attention_mask"].any(-1).tolist() if "attention_mask" in batch else [False] * len(rows))
        return batch

    args = TrainingArguments(
        out, per_device_train_batch_size=2, per_device_eval_batch_size=2, learning_rate=1e-2, max_steps=2,
        gradient_checkpointing=True, train_sampling_strategy="sequential", logging_steps=1, save_strategy="no",
        report_to=[], remove_unused_columns=False, use_cpu=True, ddp_timeout=120, seed=0,
    )

    def compute_metrics(prediction):
        distribution, score, threshold, used_comments = prediction.predictions
        target = prediction.label_ids / prediction.label_ids.sum(-1, keepdims=True)
        return {"mae": float(abs(score - target @ (1 + torch.arange(10)).numpy()).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                      data_collator=recording_collator, compute_metrics=compute_metrics)
    trainer.train()
    find_unused = trainer.model_wrapped.find_unused_parameters
    train_batches = list(seen)
    metrics = trainer.evaluate()
    prediction = trainer.predict(evaluation)
    rank, world = trainer.args.process_index, trainer.args.world_size
    state = model.state_dict()
    changed = sorted({k.split(".")[0] for k in state if not torch.equal(state[k], initial[k])})
    checksum = float(sum(p.double().sum() for p in model.parameters()))
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"train_batches": train_batches, "checksum": checksum, "world": world,
                   "find_unused_parameters": find_unused, "changed": changed}, f)
    if rank == 0:
        model.eval()
        whole = collate(list(evaluation))
        with torch.no_grad():
            own = model(**whole)
        fields = ("distribution", "score", "threshold", "used_comments")
        differences = {name: float(abs(torch.as_tensor(value).float() - getattr(own, name).float()).max())
                       for name, value in zip(fields, prediction.predictions)}
        with open(os.path.join(out, "result.json"), "w") as f:
            json.dump({"metrics": metrics, "own_loss": own.loss.item(), "differences": differences,
                       "logged_losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}, f)


if __name__ == "__main__":
    main(*sys.argv[1:5])
