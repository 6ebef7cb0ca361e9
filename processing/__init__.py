"""Aesformer image processor, processor and comment cleaning (`aesformer_processing`)."""

from .processing_aesformer import (AesformerImageProcessor, AesformerProcessor, clean_comments, has_comment_text,
                                   pad_encodings, strip_markup)

__all__ = ["AesformerImageProcessor", "AesformerProcessor", "clean_comments", "has_comment_text", "pad_encodings",
           "strip_markup"]
