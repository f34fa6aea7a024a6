"""Prompt templates and A/B experiments: documents, rendering, assignment and statistics (pure)."""
