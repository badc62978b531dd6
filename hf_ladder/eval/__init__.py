"""Evaluation: exact text scoring (perplexity, bits per character / byte); benchmarks and the report follow."""
