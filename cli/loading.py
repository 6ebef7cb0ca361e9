"""Moved to `modeling_aesformer.loading` (the model layer, so that the training stages load models as the commands
do); kept while the other command modules still import it from here."""

from modeling_aesformer.loading import (ModelLoadError, ModelSourceError, check_model_source, describe_load_error,
                                        is_hub_id, load_model)

__all__ = ["ModelLoadError", "ModelSourceError", "check_model_source", "describe_load_error", "is_hub_id",
           "load_model"]
