"""Aesformer image processor, processor and comment cleaning (`aesformer_processing`)."""

from .processing_aesformer import AesformerImageProcessor, AesformerProcessor, clean_comments

__all__ = ["AesformerImageProcessor", "AesformerProcessor", "clean_comments"]
