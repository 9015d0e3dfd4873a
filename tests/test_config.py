"""Configuration errors name the file and the key."""

import pytest

from kurabe import KurabeError
from kurabe.config import load_config


def write(tmp_path, text, name="shootout.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_a_full_config_loads_and_relative_paths_follow_the_file(tmp_path):
    (tmp_path / "models").mkdir()
    path = write(tmp_path, """
[run]
name = "mine"
repeats = 5
max_tokens = 64
fixed_length = true

[[models]]
name = "a"
source = "models/a.gguf"
[models.engine]
ctx = 8192
cache_type_k = "q8_0"
cache_type_v = "q8_0"
flash_attn = "on"
threads = 2
extra_args = ["--mlock"]

[[models]]
name = "b"
source = "http://127.0.0.1:8080/v1"
engine = { api_key_env = "B_KEY" }

[[prompts]]
id = "p1"
text = "こんにちは"
""")
    cfg = load_config(path)
    assert cfg.run.repeats == 5 and cfg.run.fixed_length
    assert cfg.models[0].source == str(tmp_path / "models" / "a.gguf")
    assert cfg.models[0].engine.cache_type_k == "q8_0"
    assert cfg.models[1].kind == "endpoint" and cfg.models[1].engine.api_key_env == "B_KEY"
    assert cfg.prompts[0].lang == "ja"


@pytest.mark.parametrize("body, where", [
    ('[[models]]\nname = "a"\nsource = "x.gguf"\n[models.engine]\nctxx = 5\n', "models.0.engine.ctxx"),
    ('[[models]]\nname = "a"\nsource = "x.gguf"\n[models.engine]\ncache_type_k = "q9"\n',
     "models.0.engine.cache_type_k"),
    ('[run]\nrepeats = 0\n[[models]]\nname = "a"\nsource = "x"\n', "run.repeats"),
    ('[run]\nrepeats = 2\n', "models"),
    ('[[models]]\nname = "a"\nsource = "x"\n[[models]]\nname = "a"\nsource = "y"\n', "repeated: a"),
])
def test_bad_configs_name_file_and_key(tmp_path, body, where):
    path = write(tmp_path, body)
    with pytest.raises(KurabeError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert where in str(info.value)


def test_broken_toml_and_missing_file(tmp_path):
    with pytest.raises(KurabeError, match="not valid TOML"):
        load_config(write(tmp_path, "[run\n"))
    with pytest.raises(KurabeError, match="cannot read config"):
        load_config(tmp_path / "nope.toml")


def test_a_url_carrying_credentials_is_refused_without_repeating_them(tmp_path):
    path = write(tmp_path, '[[models]]\nname = "a"\nsource = "http://me:sk-secret@127.0.0.1:9/v1"\n'
                           '[[prompts]]\nid = "p"\ntext = "x"\n')
    with pytest.raises(KurabeError) as info:
        load_config(path)
    assert "models.0.source: a URL with a user name or password" in str(info.value)
    assert "engine.api_key_env" in str(info.value)
    assert "sk-secret" not in str(info.value)
