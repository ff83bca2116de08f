"""Finegate: data-quality-gated fine-tuning."""
