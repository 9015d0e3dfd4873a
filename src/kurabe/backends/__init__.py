"""Backends: the servers kurabe talks to, each behind one interface (``base.Backend``).

``llamacpp``  a managed llama.cpp server (the xllamacpp wheel or any llama-server binary)
              and an external llama-server; ``openai`` any OpenAI-compatible endpoint;
``ollama``    Ollama's endpoint; ``scripted`` an in-process server that replays scripted
              streams, for tests. A backend owns its lifecycle and its dialect; the registry
              in ``base`` creates one by name. Adding an engine means adding one module here.
"""
