"""The application layer (`aesformer_cli`): the `aesformer` command line and its commands.

It sits above the three library packages and imports them only inside the functions that run a command, so
`aesformer --help` and `aesformer <command> --help` answer before torch and transformers load. Run it as the
`aesformer` console script or as `python -m aesformer_cli` (also under `accelerate launch -m aesformer_cli`).
See docs/architecture.md for the layers.
"""
