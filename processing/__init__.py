"""Aesformer image processor, processor and comment cleaning (`aesformer_processing`)."""

from .processing_aesformer import AesformerImageProcessor, AesformerProcessor, clean_comments, pad_encodings

__all__ = ["AesformerImageProcessor", "AesformerProcessor", "clean_comments", "pad_encodings"]
