"""The llama.cpp simulator."""
