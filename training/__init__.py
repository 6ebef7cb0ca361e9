"""Training and evaluation (`aesformer_training`): dataset loaders and comments files, augmentation, the synthetic
dataset, the losses and the accelerate loop of both stages, checkpoints, evaluation, and the two stages as calls
(`stages`) with their command-line flags (`arguments`). Sits above `modeling_aesformer` and below the command line
(`aesformer_cli`); see docs/architecture.md."""
