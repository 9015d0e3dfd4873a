"""Turn a configured model source into a file (or URL) with the facts a run records."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kurabe import KurabeError
from kurabe.modelfiles.builtin import _cache_dir, builtin_model, builtin_path
from kurabe.modelfiles.gguf_header import GGUFError, read_header


@dataclass
class ResolvedModel:
    name: str
    source: str
    kind: str  # builtin | file | endpoint
    file_path: Path | None = None
    file_bytes: int | None = None
    file_sha256: str | None = None
    quant: str | None = None
    architecture: str | None = None
    chat_template: str | None = None  # supplied by kurabe (built-in) or the config
    gguf_chat_template: str | None = None  # the one the file carries
    header: Any = None  # the GGUF header (read once: card, plan and facts all come from it)


def file_sha256(path: Path) -> str:
    """sha256 of a model file, cached by (path, size, mtime) so big files are hashed once."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache = _cache_dir() / "sha256.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    known[key] = digest.hexdigest()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known))
        tmp.replace(cache)
    except OSError:
        pass
    return known[key]


def resolve_model(name: str, source: str, kind: str, chat_template_file: str | None = None
                  ) -> ResolvedModel:
    if kind in ("endpoint", "scripted"):
        return ResolvedModel(name=name, source=source, kind=kind)
    template = None
    if kind == "builtin":
        path = builtin_path(source)
        template = builtin_model(source).chat_template
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise KurabeError(f"model '{name}': file not found: {source}")
    if chat_template_file:
        try:
            template = Path(chat_template_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise KurabeError(
                f"model '{name}': engine.chat_template_file {chat_template_file}: {exc.strerror}"
            ) from None
    try:
        header = read_header(path)
    except GGUFError as exc:
        raise KurabeError(f"model '{name}': {exc}") from None
    return ResolvedModel(
        name=name, source=source, kind=kind, file_path=path, file_bytes=path.stat().st_size,
        file_sha256=file_sha256(path), quant=header.file_type_name,
        architecture=header.architecture, chat_template=template,
        gguf_chat_template=header.get("tokenizer.chat_template"), header=header,
    )
