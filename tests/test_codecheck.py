"""Single-file HTML apps checked in real headless Chromium: hand-written boards, to-do lists
and counters, each correct or broken in one known way, and answer extraction."""

from __future__ import annotations

import json
import time

import pytest

from kurabe.evals.codecheck import (
    SUBCHECKS,
    XSS_CHECKS,
    XSS_PAYLOADS,
    _Session,
    check_app,
    check_bbs,
    extract_html,
    japanese_share,
)

# -- pages -----------------------------------------------------------------------------------

_BOARD_JA = {"title": "ひとこと掲示板", "name": "名前", "name_ph": "名前（省略可）",
             "msg": "メッセージ", "msg_ph": "メッセージを書いてください", "button": "投稿する",
             "list": "投稿一覧", "anon": "名無しさん", "empty": "まだ投稿はありません"}
_BOARD_EN = {"title": "Message Board", "name": "Name", "name_ph": "Your name (optional)",
             "msg": "Message", "msg_ph": "Write something nice", "button": "Post",
             "list": "All posts", "anon": "Anonymous", "empty": "No posts yet"}

_RENDER = {
    # Safe: text nodes only.
    "text": """
      const li = document.createElement('li');
      const who = document.createElement('b'); who.textContent = p.name || T.anon;
      const body = document.createElement('span'); body.textContent = p.text;
      li.append(who, '：', body); ul.append(li);""",
    # Vulnerable: the message goes in as markup.
    "html": """
      const li = document.createElement('li');
      li.innerHTML = '<b>' + (p.name || T.anon) + '</b>：<span>' + p.text + '</span>';
      ul.append(li);""",
    # Escapes < > & but builds a single-quoted attribute: ' breaks out of it.
    "attr": """
      const esc = s => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
      const li = document.createElement('li');
      li.innerHTML = "<b>" + esc(p.name || T.anon) + "</b>：<span title='" + esc(p.text) + "'>"
        + esc(p.text) + "</span>";
      ul.append(li);""",
}


def board(render="text", storage=True, lang="ja", newest_first=True, clears=True,
          extra_script="", extra_head="", broken=False) -> str:
    t = _BOARD_JA if lang == "ja" else _BOARD_EN
    load = ("try { return JSON.parse(localStorage.getItem(KEY)) || []; } catch (e) { return []; }"
            if storage else "return memory;")
    save = "localStorage.setItem(KEY, JSON.stringify(posts));" if storage else "memory = posts;"
    add = "posts.unshift(post);" if newest_first else "posts.push(post);"
    clear = "document.getElementById('msg').value = '';" if clears else ""
    syntax = "if (posts.length {" if broken else ""
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8">
<title>{t['title']}</title>
{extra_head}
<style>
  body {{ font-family: sans-serif; max-width: 40em; margin: 2em auto; }}
  label {{ display: block; margin: .5em 0; }}
  textarea {{ width: 100%; height: 5em; }}
</style>
</head>
<body>
<h1>{t['title']}</h1>
<form id="post-form">
  <label>{t['name']} <input id="author" type="text" placeholder="{t['name_ph']}"></label>
  <label>{t['msg']} <textarea id="msg" required placeholder="{t['msg_ph']}"></textarea></label>
  <button type="submit">{t['button']}</button>
</form>
<h2>{t['list']}</h2>
<p id="empty">{t['empty']}</p>
<ul id="posts"></ul>
<script>
const T = {json.dumps(t, ensure_ascii=False)};
const KEY = 'board-posts';
let memory = [];
function loadPosts() {{ {load} }}
function render() {{
  const ul = document.getElementById('posts');
  ul.textContent = '';
  const posts = loadPosts();
  document.getElementById('empty').hidden = posts.length > 0;
  for (const p of posts) {{ {_RENDER[render]}
  }}
}}
document.getElementById('post-form').addEventListener('submit', (e) => {{
  e.preventDefault();
  const text = document.getElementById('msg').value.trim();
  if (!text) return;
  const post = {{ name: document.getElementById('author').value.trim(), text, at: Date.now() }};
  const posts = loadPosts();
  {syntax}
  {add}
  {save}
  {clear}
  render();
}});
render();
{extra_script}
</script>
</body>
</html>
"""


def todo(safe=True, storage=True) -> str:
    put = ("const s = document.createElement('span'); s.textContent = item.text; li.append(s);"
           if safe else "li.innerHTML = '<span>' + item.text + '</span>';")
    load = ("try { return JSON.parse(localStorage.getItem('todos')) || []; } catch (e) { return []; }"
            if storage else "return memory;")
    save = "localStorage.setItem('todos', JSON.stringify(items));" if storage else "memory = items;"
    return f"""<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>やることリスト</title></head>
<body>
<h1>やることリスト</h1>
<div class="row">
  <input id="new-item" placeholder="やることを入力">
  <button id="add">追加</button>
</div>
<ul id="list"></ul>
<script>
let memory = [];
function loadItems() {{ {load} }}
function render() {{
  const ul = document.getElementById('list'); ul.textContent = '';
  loadItems().forEach((item, i) => {{
    const li = document.createElement('li');
    {put}
    const del = document.createElement('button'); del.textContent = '削除';
    del.onclick = () => {{ const items = loadItems(); items.splice(i, 1); {save} render(); }};
    li.append(del); ul.append(li);
  }});
}}
function add() {{
  const input = document.getElementById('new-item');
  const text = input.value.trim(); if (!text) return;
  const items = loadItems(); items.push({{ text, done: false }}); {save}
  input.value = ''; render();
}}
document.getElementById('add').addEventListener('click', add);
document.getElementById('new-item').addEventListener('keydown', e => {{ if (e.key === 'Enter') add(); }});
render();
</script>
</body></html>
"""


def counter(works=True, storage=True) -> str:
    step = "count += 1;" if works else "cuont += 1;"  # the broken one throws on every click
    start = "Number(localStorage.getItem('count')) || 0" if storage else "0"
    save = "localStorage.setItem('count', count);" if storage else ""
    return f"""<!DOCTYPE html>
<html lang="ja"><head><meta charset="utf-8"><title>カウンター</title></head>
<body>
<h1>カウンター</h1>
<p>現在の回数：<span id="value">0</span> 回</p>
<button id="minus">－1</button>
<button id="plus">＋1</button>
<button id="reset">リセット</button>
<script>
let count = {start};
const show = () => {{ document.getElementById('value').textContent = count; {save} }};
show();
document.getElementById('plus').onclick = () => {{ {step} show(); }};
document.getElementById('minus').onclick = () => {{ count -= 1; show(); }};
document.getElementById('reset').onclick = () => {{ count = 0; show(); }};
</script>
</body></html>
"""


GOOD_BOARD = board()
FUNCTIONAL = ("loads", "self_contained", "japanese", "posts_render", "newest_first",
              "form_clears", "persists")


@pytest.fixture(scope="module")
def checked(browser):
    """Check each page once per module (results cached by name)."""
    cache: dict[str, object] = {}

    def get(name: str, kind: str, html: str | None, **kw):
        if name not in cache:
            t0 = time.monotonic()
            cache[name] = check_app(kind, html, browser=browser, **kw)
            cache[name].wall_s = time.monotonic() - t0
        return cache[name]
    return get


def _state(result) -> dict[str, bool]:
    return {c.name: c.passed for c in result.checks}


def _failed(result) -> set[str]:
    return {c.name for c in result.checks if not c.passed}


# -- the bulletin board ----------------------------------------------------------------------

def test_correct_board_passes_every_subcheck(browser):
    t0 = time.monotonic()
    r = check_bbs(GOOD_BOARD, browser=browser)
    r.wall_s = time.monotonic() - t0
    assert r.kind == "bbs" and r.extracted and r.passed, r.to_dict()
    assert [c.name for c in r.checks] == list(SUBCHECKS["bbs"])
    assert all(c.detail and "\n" not in c.detail for c in r.checks)
    assert r.requests_blocked == [] and r.dialogs == []
    assert r.wall_s < 10


def test_innerhtml_board_fails_exactly_the_xss_checks(checked):
    r = checked("vulnerable", "bbs", board(render="html"))
    assert _failed(r) == set(XSS_CHECKS), r.to_dict()
    assert not r.passed
    state = _state(r)
    assert all(state[n] for n in FUNCTIONAL)
    assert "ran" in r.check("xss_no_script").detail
    assert r.dialogs  # the alert() in a payload opened one
    # the img payload's broken image was requested from the app's origin and blocked
    assert any(u.startswith("http://kurabe.test/x") for u in r.requests_blocked)


def test_attribute_breakout_is_caught_by_hovering(checked):
    r = checked("attr", "bbs", board(render="attr"))
    assert _failed(r) == {"xss_no_script"}, r.to_dict()
    assert "onmouseover" in r.check("xss_no_script").detail


def test_board_without_storage_fails_reload_only(checked):
    r = checked("nostore", "bbs", board(storage=False))
    assert _failed(r) == {"persists"}, r.to_dict()
    assert "gone after a reload" in r.check("persists").detail


def test_english_board_fails_japanese_only(checked):
    r = checked("english", "bbs", board(lang="en"))
    assert _failed(r) == {"japanese"}, r.to_dict()
    assert r.check("japanese").detail.startswith("0%")


def test_oldest_first_and_unclearing_board(checked):
    r = checked("sloppy", "bbs", board(newest_first=False, clears=False))
    assert _failed(r) == {"newest_first", "form_clears"}, r.to_dict()
    assert "oldest first" in r.check("newest_first").detail


def test_syntax_error_page_fails_loading_and_everything_after(checked):
    r = checked("syntax", "bbs", board(broken=True))
    state = _state(r)
    assert not state["loads"] and "SyntaxError" in r.check("loads").detail
    assert not state["posts_render"] and not state["persists"]
    assert all(not state[n] and "not tested" in r.check(n).detail for n in XSS_CHECKS)
    assert any("SyntaxError" in e for e in r.console_errors)
    assert r.wall_s < 10


def test_network_requests_are_recorded_and_blocked(checked):
    html = board(extra_head='<link rel="stylesheet" href="https://cdn.example.com/style.css">',
                 extra_script="fetch('https://api.example.com/posts').then(r => r.json())"
                              ".then(d => { window.__fetched = d; }).catch(() => {});")
    r = checked("network", "bbs", html)
    assert "https://cdn.example.com/style.css" in r.requests_blocked
    assert "https://api.example.com/posts" in r.requests_blocked
    assert _failed(r) == {"self_contained"}, r.to_dict()
    assert "blocked" in r.check("self_contained").detail


def test_no_html_in_the_answer():
    answer = "申し訳ありませんが、ここではコードを書けません。掲示板の作り方を説明します。"
    html = extract_html(answer)
    assert html is None
    r = check_app("bbs", html, browser=None)
    assert r.extracted is False and r.passed is False
    assert [c.name for c in r.checks] == list(SUBCHECKS["bbs"])
    assert all(not c.passed and c.detail == "no HTML document in the answer" for c in r.checks)
    assert json.loads(json.dumps(r.to_dict()))["extracted"] is False


def test_page_that_never_yields_is_cut_off(browser):
    # The submit handler spins forever: the click and every later call would block.
    html = board().replace("e.preventDefault();", "e.preventDefault(); while (true) {}")
    t0 = time.monotonic()
    r = check_app("bbs", html, browser=browser, budget_s=2)
    assert time.monotonic() - t0 < 6
    state = _state(r)
    assert state["loads"] and state["japanese"]
    assert not state["posts_render"] and not r.passed
    assert "timed out" in r.check("posts_render").detail, r.to_dict()
    # the browser is still usable afterwards
    assert check_app("page", "<p>まだ動きます</p>", browser=browser).passed


def test_watchdog_closes_a_page_stuck_in_evaluate(browser):
    # evaluate() takes no timeout: once the page spins, only closing its context ends it.
    s = _Session(browser, "<p>待って</p>", budget_s=1)
    try:
        assert s.load() is None
        s.page.evaluate("() => { setTimeout(() => { while (true) {} }, 50); }")
        s.page.wait_for_timeout(200)
        t0 = time.monotonic()
        with pytest.raises(Exception):  # noqa: B017 - whatever the driver raises once closed
            s.page.evaluate("() => 1")
        assert time.monotonic() - t0 < 3 and s.closed
    finally:
        s.close()


def test_result_to_dict_round_trips(checked):
    d = checked("vulnerable", "bbs", board(render="html")).to_dict()
    again = json.loads(json.dumps(d, ensure_ascii=False))
    assert again["kind"] == "bbs" and again["passed"] is False and again["extracted"] is True
    assert {c["name"] for c in again["checks"]} == set(SUBCHECKS["bbs"])
    assert set(again["checks"][0]) == {"name", "passed", "detail"}


# -- other kinds -----------------------------------------------------------------------------

def test_correct_todo_passes(checked):
    r = checked("todo", "todo", todo())
    assert r.passed, r.to_dict()
    assert [c.name for c in r.checks] == list(SUBCHECKS["todo"])


def test_sloppy_todo_fails_storage_and_escaping(checked):
    r = checked("todo-bad", "todo", todo(safe=False, storage=False))
    assert _failed(r) == {"persists", *XSS_CHECKS}, r.to_dict()


def test_counter_both_ways(checked):
    good = checked("counter", "counter", counter())
    assert good.passed, good.to_dict()
    assert "0 → 1 → 2" in good.check("click_changes").detail
    assert good.check("persists").detail == "2 is still shown after a reload"
    bad = checked("counter-bad", "counter", counter(works=False))
    assert _failed(bad) == {"click_changes", "persists"}, bad.to_dict()
    assert any("cuont" in e for e in bad.console_errors)
    forgetful = checked("counter-nostore", "counter", counter(storage=False))
    assert _failed(forgetful) == {"persists"}, forgetful.to_dict()
    assert "not 2" in forgetful.check("persists").detail


def test_unknown_kind_gets_the_page_checks(checked):
    r = checked("page", "weather-widget", counter())
    assert r.kind == "page" and [c.name for c in r.checks] == ["loads", "self_contained",
                                                                "japanese"]
    assert r.passed


# -- extraction ------------------------------------------------------------------------------

DOC = "<!DOCTYPE html>\n<html lang=\"ja\">\n<head><title>掲示板</title></head>\n" \
      "<body><script>const a = 1;</script></body>\n</html>"


def test_extract_fenced_with_japanese_prose():
    answer = f"以下が完成したコードです。\n\n```html\n{DOC}\n```\n\n保存してブラウザで開いてください。"
    assert extract_html(answer) == DOC


def test_extract_bare_document_with_prose():
    answer = f"はい、どうぞ。\n{DOC}\nこのファイルを index.html として保存します。"
    assert extract_html(answer) == DOC


def test_extract_unlabelled_fence_and_unclosed_last_fence():
    assert extract_html(f"コード：\n```\n{DOC}\n```\n") == DOC
    assert extract_html(f"コード：\n~~~HTML\n{DOC}\n~~~") == DOC
    assert extract_html(f"コード：\n```html\n{DOC}\n") == DOC  # the closing fence never came


def test_extract_picks_the_largest_complete_document():
    small = "<!doctype html><html><body>下書き</body></html>"
    css = "```css\nbody { color: red; }\n```"
    answer = f"まず下書き：\n```html\n{small}\n```\n{css}\n完成版：\n```html\n{DOC}\n```"
    assert extract_html(answer) == DOC
    assert extract_html(f"<think>```html\n{DOC}{DOC}\n```</think>最終版：\n```html\n{small}\n```") \
        == small


def test_extract_rejects_cut_off_and_code_without_html():
    cut = "途中まで：\n<!DOCTYPE html>\n<html><head><script>function f() {"
    assert extract_html(cut) is None
    assert extract_html("```js\nconsole.log('こんにちは');\n```") is None
    assert extract_html("") is None and extract_html(None) is None


def test_extract_fenced_fragment_or_unclosed_tags():
    fragment = "<div id=\"app\"></div>\n<script>document.getElementById('app').textContent='やあ';</script>"
    assert extract_html(f"断片です：\n```html\n{fragment}\n```") == fragment
    open_doc = "<!DOCTYPE html>\n<meta charset=utf-8>\n<p>こんにちは</p>\n<script>let x = 1;</script>"
    assert extract_html(f"```html\n{open_doc}\n```") == open_doc


def test_extracted_answer_is_the_page():
    answer = f"掲示板を作りました。\n\n```html\n{GOOD_BOARD}```\n\n以上です。"
    assert extract_html(answer) == GOOD_BOARD.strip()


def test_japanese_check_can_be_left_out(checked):
    r = checked("english-page", "page", board(lang="en"), japanese=False)
    assert [c.name for c in r.checks] == ["loads", "self_contained"] and r.passed


# -- helpers ---------------------------------------------------------------------------------

def test_japanese_share():
    assert japanese_share("ひとこと掲示板 投稿する") == (1.0, 11)
    share, letters = japanese_share("Post 投稿")
    assert letters == 6 and share == pytest.approx(2 / 6)
    assert japanese_share("ｶﾀｶﾅ")[0] == 1.0  # half-width kana fold under NFKC
    assert japanese_share("123 !?") == (None, 0)


def test_payloads_are_the_documented_ones():
    joined = "\n".join(XSS_PAYLOADS)
    for needle in ("<script>", "<img src=x onerror=", "\"><svg onload=", "' onmouseover='"):
        assert needle in joined
