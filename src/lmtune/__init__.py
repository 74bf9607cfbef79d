"""lmtune: fine-tune language models on your own examples."""

__version__ = "0.1.0"
