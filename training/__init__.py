"""Aesformer training code (`aesformer_training`): losses, data, the shared training loop (later issues)."""
