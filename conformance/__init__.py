"""Differential conformance suite for tied word embeddings in the Hugging Face stack."""

__version__ = "0.1.0"
