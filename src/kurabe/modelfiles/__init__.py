"""Model sources: built-in models shipped as PyPI packages, local GGUF files, endpoints."""
