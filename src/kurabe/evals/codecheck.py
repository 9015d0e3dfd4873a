"""Single-file HTML apps written by a model, tried in a real headless browser.

``extract_html`` pulls the document out of an answer; ``check_app`` (``check_bbs``,
``check_todo``, ``check_counter``, ``check_page``) loads it and works it like a person would,
storing every sub-check apart with a one-line reason.

How a page is served: from a fixed fake origin (``http://kurabe.test/app.html``), fulfilled by
Playwright's router, so ``localStorage`` has a real origin and survives a reload; every other
request is blocked and recorded. Each scenario runs in a fresh browser context (a fresh
profile with empty storage), with short per-step timeouts, a time budget, and a watchdog that
closes the context if a page's script never yields.

The form controls are found by role, type and label, never by a fixed id: the message field
is the (largest) textarea, else the text input whose label reads like a message rather than a
name; the submit control is the form's submit button, else a button whose text reads like
"post"/"add"; the rendered list is judged from the page's visible text (``innerText``).

Sub-checks (``SUBCHECKS``): every kind gets ``loads`` (no uncaught error or console error
while loading), ``self_contained`` (no request beyond the page itself) and ``japanese`` (the
visible UI text is mostly Japanese). ``bbs`` adds ``posts_render``, ``newest_first``,
``form_clears``, ``persists`` and the XSS trio ``xss_no_script``, ``xss_no_dialog``,
``xss_literal``; ``todo`` adds ``adds_items``, ``input_clears``, ``persists`` and the XSS
trio; ``counter`` adds ``click_changes`` and ``persists``; ``page`` has the three only.
"""

from __future__ import annotations

import asyncio
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from kurabe.evals.checks import JA_MIN_RATIO, japanese_ratio

ORIGIN = "http://kurabe.test"
APP_URL = f"{ORIGIN}/app.html"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

JAPANESE_MIN_SHARE = JA_MIN_RATIO
SCENARIO_BUDGET_S = 10.0   # each scenario (a fresh context) gets this long in all
WATCHDOG_GRACE_S = 1.0     # past the budget, the context is closed from under a stuck call
NAV_TIMEOUT_MS = 5000
ACTION_TIMEOUT_MS = 2000
RENDER_TIMEOUT_MS = 1500   # how long a post may take to show up
SHORT_WAIT_MS = 400        # once something already failed to show up, wait only this long
SETTLE_MS = 100            # after "load", for errors thrown just after it
CLICK_WAIT_MS = 600        # for a click to change the page
RELOAD_WAIT_MS = 1000      # after a reload the stored entries should be back by then
EVENT_WAIT_MS = 200        # for handlers that fire late (a broken image's onerror)

NAME_FILLER = "検査太郎"
BBS_MESSAGES = ("はじめての投稿です。よろしくお願いします【検査一】",
                "二つめの投稿です。今日は晴れ【検査二】")
TODO_ITEMS = ("牛乳を買う【検査一】", "図書館に本を返す【検査二】")

# Each payload sets its own number, so a failure says which one ran.
XSS_PAYLOADS = (
    "<script>window.__xss=1;alert('xss1')</script>",
    "<img src=x onerror=\"window.__xss=2;alert('xss2')\">",
    "\"><svg onload=\"window.__xss=3;alert('xss3')\">",
    "' onmouseover='window.__xss=4",
    "</textarea></title><b onmouseover=\"window.__xss=5\">太字</b>",
)

PAGE_CHECKS = ("loads", "self_contained", "japanese")
XSS_CHECKS = ("xss_no_script", "xss_no_dialog", "xss_literal")
SUBCHECKS: dict[str, tuple[str, ...]] = {
    "bbs": PAGE_CHECKS + ("posts_render", "newest_first", "form_clears", "persists") + XSS_CHECKS,
    "todo": PAGE_CHECKS + ("adds_items", "input_clears", "persists") + XSS_CHECKS,
    "counter": PAGE_CHECKS + ("click_changes", "persists"),
    "page": PAGE_CHECKS,
}
KIND_ALIASES = {"bbs": "bbs", "board": "bbs", "bulletin": "bbs", "bulletin_board": "bbs",
                "keijiban": "bbs", "掲示板": "bbs", "todo": "todo", "todos": "todo",
                "todo_list": "todo", "tasks": "todo", "counter": "counter", "page": "page"}


# -- results ---------------------------------------------------------------------------------

@dataclass
class SubCheck:
    name: str
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CodeCheckResult:
    kind: str
    extracted: bool
    checks: list[SubCheck] = field(default_factory=list)
    requests_blocked: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def passed(self) -> bool:
        """Every sub-check passed (and there was a document to check)."""
        return self.extracted and bool(self.checks) and all(c.passed for c in self.checks)

    def check(self, name: str) -> SubCheck | None:
        return next((c for c in self.checks if c.name == name), None)

    def failed(self) -> list[str]:
        return [c.name for c in self.checks if not c.passed]

    def to_dict(self) -> dict:
        return {"kind": self.kind, "extracted": self.extracted, "passed": self.passed,
                "checks": [c.to_dict() for c in self.checks],
                "requests_blocked": list(self.requests_blocked),
                "console_errors": list(self.console_errors), "dialogs": list(self.dialogs),
                "elapsed_s": round(self.elapsed_s, 3)}


# -- extraction ------------------------------------------------------------------------------

_THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)\n?"
                    r"^[ \t]*(?P=fence)[ \t]*$", re.M | re.S)
_DOC_START = re.compile(r"<!doctype\s+html\b|<html\b", re.I)
_DOC_END = re.compile(r"</html\s*>", re.I)
_BODY_END = re.compile(r"</body\s*>", re.I)
_BARE_DOC = re.compile(r"(?:<!doctype\s+html\b|<html\b).*?</html\s*>", re.I | re.S)


def _trim_doc(text: str) -> str:
    """From the document's start to the end of its last ``</html>`` (when it has one)."""
    start = _DOC_START.search(text)
    if start:
        text = text[start.start():]
    ends = list(_DOC_END.finditer(text))
    if ends:
        text = text[:ends[-1].end()]
    return text.strip()


def _complete(doc: str) -> bool:
    return bool(_DOC_START.match(doc)) and bool(_DOC_END.search(doc) or _BODY_END.search(doc))


def extract_html(answer: str | None) -> str | None:
    """The single-file HTML app in a model answer, or None.

    Looks at fenced blocks (```html, or any fence holding an HTML document) and at bare
    ``<!DOCTYPE html>``/``<html>`` documents, and returns the largest complete one (it starts
    the document and closes ``</html>`` or ``</body>``). Failing that, a closed ```html fence
    holding a document start or a script is taken as it is (the model finished it but left
    out the closing tags, or wrote a body fragment). A document cut off mid-way is not.
    """
    if not answer:
        return None
    text = _THINK.sub("", answer)
    complete: list[str] = []
    fallback: list[str] = []
    for m in _FENCE.finditer(text):
        body = m.group("body")
        info = m.group("info").strip().lower()
        lang = info.split()[0] if info else ""
        if _DOC_START.search(body):
            doc = _trim_doc(body)
            if _complete(doc):
                complete.append(doc)
            elif lang in ("html", "htm", "xhtml"):
                fallback.append(doc)
        elif lang in ("html", "htm", "xhtml") and re.search(r"<script\b", body, re.I):
            fallback.append(body.strip())
    complete += [m.group(0).strip() for m in _BARE_DOC.finditer(text)]
    complete = [d for d in complete if _complete(d)]
    for pool in (complete, fallback):
        if pool:
            return max(pool, key=len)
    return None


# -- Japanese share --------------------------------------------------------------------------

def japanese_share(text: str) -> tuple[float | None, int]:
    """(share of Japanese letters, letter count) of a page's visible text, as measured for
    answers (``kurabe.evals.checks.japanese_ratio``: NFKC, letters are category L*, Japanese
    is kana and kanji); the share is None when the text has no letters."""
    r = japanese_ratio(text or "")
    return r.ratio, r.letters


# -- the page driver -------------------------------------------------------------------------

class _OutOfTime(Exception):
    pass


_FIND_JS = r"""
() => {
  const norm = s => (s || '').replace(/\s+/g, ' ').trim();
  const visible = e => {
    if (!e || !e.isConnected) return false;
    const s = getComputedStyle(e);
    if (s.display === 'none' || s.visibility === 'hidden' || s.visibility === 'collapse') return false;
    const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0;
  };
  const usable = e => visible(e) && !e.disabled && !e.readOnly;
  const labelOf = e => {
    const parts = [e.getAttribute('aria-label'), e.getAttribute('placeholder'),
                   e.getAttribute('name'), e.id, e.getAttribute('title')];
    if (e.labels) for (const l of e.labels) parts.push(l.innerText);
    const lb = e.getAttribute('aria-labelledby');
    if (lb) for (const id of lb.split(/\s+/)) {
      const t = document.getElementById(id); if (t) parts.push(t.innerText);
    }
    return norm(parts.filter(Boolean).join(' '));
  };
  const describe = e => {
    if (!e) return null;
    let d = e.tagName.toLowerCase();
    if (e.id) d += '#' + e.id;
    const n = e.getAttribute('name'); if (n) d += '[name=' + n + ']';
    const field = e.tagName === 'TEXTAREA' || (e.tagName === 'INPUT' && ['text', 'search'].includes(e.type));
    const t = norm(field ? (e.getAttribute('placeholder') || '') : (e.innerText || e.value || ''));
    if (t) d += ' "' + t.slice(0, 24) + '"';
    return d;
  };
  const valueOf = e => e ? (('value' in e) ? e.value : e.innerText) : null;
  const BODY = /本文|内容|メッセージ|コメント|書き込|書込|投稿|つぶやき|message|msg|body|content|comment|text|post|タスク|やること|todo|task|item|項目|追加|入力/i;
  const NAME = /名前|なまえ|氏名|ハンドル|ニックネーム|投稿者|name|author|user|nick|handle/i;
  const TITLE = /件名|タイトル|題名|title|subject/i;
  const SUBMIT = /投稿|送信|書き込|書込|追加|登録|保存|post|submit|send|add|save|ok|\+|＋/i;
  const NEG = /削除|消去|消す|クリア|リセット|全消|キャンセル|編集|完了|delete|remove|clear|reset|cancel|edit|done|toggle/i;

  document.querySelectorAll('[data-kurabe]').forEach(e => e.removeAttribute('data-kurabe'));
  const all = sel => [...document.querySelectorAll(sel)];
  const inputs = all('input').filter(e => ['text', 'search'].includes(e.type) && usable(e));
  const areas = all('textarea').filter(usable);
  const editables = all('[contenteditable=""],[contenteditable="true"],[contenteditable="plaintext-only"]').filter(visible);
  const area = e => { const r = e.getBoundingClientRect(); return r.width * r.height; };

  let body = null;
  if (areas.length) {
    body = areas.find(e => BODY.test(labelOf(e))) || areas.slice().sort((a, b) => area(b) - area(a))[0];
  } else if (inputs.length) {
    const unnamed = inputs.filter(e => !NAME.test(labelOf(e)));
    body = unnamed.find(e => BODY.test(labelOf(e))) || unnamed[unnamed.length - 1] || inputs[inputs.length - 1];
  } else if (editables.length) {
    body = editables[0];
  }
  if (!body) return {body: null, others: [], submit: null, form: false, value: null};
  body.setAttribute('data-kurabe', 'body');
  const form = body.closest('form');
  const fields = (form ? [...form.querySelectorAll('input, textarea')] : [...inputs, ...areas])
    .filter(e => e !== body && usable(e) && (e.tagName === 'TEXTAREA' || ['text', 'search'].includes(e.type)))
    .filter(e => form || NAME.test(labelOf(e)) || TITLE.test(labelOf(e)));
  fields.forEach(e => e.setAttribute('data-kurabe', 'other'));

  const buttons = root => [...root.querySelectorAll(
      'button, input[type=submit], input[type=button], input[type=image], [role=button]')]
    .filter(usable);
  const textOf = b => norm((b.innerText || b.value || '') + ' ' + labelOf(b));
  const after = b => !!(body.compareDocumentPosition(b) & Node.DOCUMENT_POSITION_FOLLOWING);
  let submit = null;
  if (form) {
    const subs = buttons(form).filter(b => b.type === 'submit' && !NEG.test(textOf(b)));
    submit = subs.find(b => SUBMIT.test(textOf(b))) || subs[0] || null;
  }
  if (!submit) {
    const cands = buttons(document).filter(b => !NEG.test(textOf(b)));
    const named = cands.filter(b => SUBMIT.test(textOf(b)));
    submit = named.find(after) || named[0] || cands.find(after) || null;
  }
  if (submit) submit.setAttribute('data-kurabe', 'submit');
  return {body: describe(body), others: fields.map(describe), submit: describe(submit),
          form: !!form, body_is_textarea: body.tagName === 'TEXTAREA',
          body_is_input: body.tagName === 'INPUT', value: valueOf(body)};
}
"""

_VISIBLE_TEXT_JS = r"""
() => {
  const parts = [document.title || '', document.body ? document.body.innerText : ''];
  for (const e of document.querySelectorAll('input, textarea')) {
    if (e.placeholder) parts.push(e.placeholder);
    if (['submit', 'button', 'reset'].includes(e.type) && e.value) parts.push(e.value);
  }
  return parts.join('\n');
}
"""

_HOVER_ALL_JS = r"""
() => {
  for (const e of document.querySelectorAll('body *')) {
    for (const type of ['mouseover', 'mouseenter', 'focus']) {
      try { e.dispatchEvent(new (type === 'focus' ? FocusEvent : MouseEvent)(type, {bubbles: type !== 'mouseenter'})); }
      catch (err) {}
    }
  }
}
"""

_BUTTONS_JS = r"""
() => {
  const norm = s => (s || '').replace(/\s+/g, ' ').trim();
  const visible = e => {
    const s = getComputedStyle(e); const r = e.getBoundingClientRect();
    return s.display !== 'none' && s.visibility !== 'hidden' && r.width > 0 && r.height > 0 && !e.disabled;
  };
  document.querySelectorAll('[data-kurabe]').forEach(e => e.removeAttribute('data-kurabe'));
  const bs = [...document.querySelectorAll('button, input[type=button], input[type=submit], [role=button]')].filter(visible);
  const textOf = b => norm((b.innerText || b.value || '') + ' ' + (b.getAttribute('aria-label') || '') + ' ' + (b.getAttribute('title') || '') + ' ' + (b.id || ''));
  const INC = /\+|＋|増|ふやす|増やす|足す|たす|プラス|カウント|up|inc|plus|add|count|click|クリック|押/i;
  const DEC = /−|－|ー1|減|へらす|減らす|引く|マイナス|down|dec|minus|^\s*-/i;
  const RESET = /リセット|クリア|reset|clear|0に/i;
  const plain = bs.filter(b => !RESET.test(textOf(b)) && !DEC.test(textOf(b)));
  const pick = plain.find(b => INC.test(textOf(b))) || plain[0] || bs[0] || null;
  if (pick) pick.setAttribute('data-kurabe', 'button');
  return pick ? norm(pick.tagName.toLowerCase() + (pick.id ? '#' + pick.id : '') + ' "' + textOf(pick).slice(0, 24) + '"') : null;
}
"""


_REQUEST_SUBMIT_JS = r"""
() => {
  const f = document.querySelector('[data-kurabe="body"]').closest('form');
  f.requestSubmit ? f.requestSubmit() : f.submit();
}
"""

_XSS_VALUE_JS = "() => typeof window.__xss === 'undefined' ? null : String(window.__xss)"


class _Session:
    """One fresh browser context serving the app from the fake origin, watched closely."""

    def __init__(self, browser, html: str, budget_s: float = SCENARIO_BUDGET_S):
        self.html = html
        self.t0 = time.monotonic()
        self.budget_s = budget_s
        self.deadline = self.t0 + budget_s
        self.requests: list[str] = []
        self.errors: list[str] = []      # uncaught exceptions and console.error lines
        self.dialogs: list[str] = []
        self.context = browser.new_context(viewport={"width": 1200, "height": 900},
                                           service_workers="block", locale="ja-JP")
        self.context.set_default_timeout(ACTION_TIMEOUT_MS)
        self.context.set_default_navigation_timeout(NAV_TIMEOUT_MS)
        self.context.route("**/*", self._route)
        if hasattr(self.context, "route_web_socket"):
            self.context.route_web_socket("**/*", self._route_ws)
        self.closed = False
        self._closing: asyncio.Future[None] | None = None
        self.load_s = 0.0
        self._watched: list = []
        self.context.on("page", self._watch)
        self._watchdog = self._arm_watchdog(budget_s + WATCHDOG_GRACE_S)
        self.page = self.context.new_page()
        self._watch(self.page)

    # network -------------------------------------------------------------------------------

    def _route(self, route) -> None:
        url = route.request.url
        bare = url.split("#", 1)[0].split("?", 1)[0]
        try:
            if bare == APP_URL:
                route.fulfill(status=200, content_type="text/html; charset=utf-8", body=self.html)
            elif bare == f"{ORIGIN}/favicon.ico":
                route.fulfill(status=404, body="")
            else:
                self.requests.append(url)
                route.abort("blockedbyclient")
        except Exception:  # the context went away under the handler
            pass

    def _route_ws(self, ws) -> None:
        self.requests.append(ws.url)
        try:
            ws.close()
        except Exception:
            pass

    def _watch(self, page) -> None:
        if any(p is page for p in self._watched):
            return
        self._watched.append(page)
        page.on("dialog", self._dialog)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"uncaught {_error_text(e)}"))

    def _console(self, message) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def _dialog(self, dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        try:
            dialog.dismiss()
        except Exception:
            pass

    # time ----------------------------------------------------------------------------------

    def _arm_watchdog(self, seconds: float):
        """Close the context when a call never returns (a script that never yields blocks
        even ``evaluate``, which takes no timeout). Works on the driver's own event loop."""
        loop = getattr(self.context, "_loop", None)
        impl = getattr(self.context, "_impl_obj", None)
        if loop is None or impl is None:
            return None

        def fire():
            async def close():
                try:
                    await impl.close(reason="kurabe: the page took too long")
                except Exception:
                    pass
            self.closed = True
            self._closing = asyncio.ensure_future(close())
        try:
            return loop.call_later(seconds, fire)
        except Exception:
            return None

    def ms(self, wanted: int) -> int:
        left = (self.deadline - time.monotonic()) * 1000
        if left <= 50:
            raise _OutOfTime(f"the {self.budget_s:g} s budget ran out")
        return int(min(wanted, left))

    # page actions --------------------------------------------------------------------------

    def eval(self, js: str, arg: Any = None) -> Any:
        """Evaluate in the page; once more after a navigation the page started itself (a
        form submitted without preventDefault, a location.reload())."""
        for attempt in (0, 1):
            self.ms(1)
            try:
                return self.page.evaluate(js, arg)
            except Exception as e:
                text = str(e).lower()
                if attempt or self.closed or not ("context was destroyed" in text
                                                  or "navigat" in text):
                    raise
            try:
                self.page.wait_for_load_state("load", timeout=self.ms(NAV_TIMEOUT_MS))
            except _OutOfTime:
                raise
            except Exception:
                pass
        return None

    def load(self, reload: bool = False) -> str | None:
        """Go to the app (or reload it); the error text when it did not load."""
        t0 = time.monotonic()
        try:
            if reload:
                self.page.reload(wait_until="load", timeout=self.ms(NAV_TIMEOUT_MS))
            else:
                self.page.goto(APP_URL, wait_until="load", timeout=self.ms(NAV_TIMEOUT_MS))
        except _OutOfTime:
            raise
        except Exception as e:
            return _first_line(e)
        self.load_s = time.monotonic() - t0
        self.page.wait_for_timeout(self.ms(SETTLE_MS))
        return None

    def text(self) -> str:
        return self.eval("() => document.body ? document.body.innerText : ''") or ""

    def wait_text(self, needle: str, timeout_ms: int) -> bool:
        try:
            self.page.wait_for_function(
                "n => !!document.body && document.body.innerText.includes(n)", arg=needle,
                timeout=self.ms(timeout_ms), polling=50)
            return True
        except _OutOfTime:
            raise
        except Exception:
            if self.closed:
                raise _OutOfTime("the page stopped answering") from None
            return False

    def find_form(self) -> dict:
        return self.eval(_FIND_JS) or {"body": None}

    def submit(self, text: str, other_text: str | None, wait_for: str,
               wait_ms: int) -> tuple[bool, str, dict]:
        """Fill the message field (and the others), submit, and wait for ``wait_for`` to
        show; (shown, detail, controls found)."""
        found = self.find_form()
        if not found.get("body"):
            return False, "no text field (textarea or text input) found", found
        page = self.page
        page.locator('[data-kurabe="body"]').fill(text, timeout=self.ms(ACTION_TIMEOUT_MS))
        others = page.locator('[data-kurabe="other"]')
        for i in range(min(others.count(), 5)):
            field_ = others.nth(i)
            if other_text is not None:
                field_.fill(other_text, timeout=self.ms(ACTION_TIMEOUT_MS))
            elif not field_.input_value(timeout=self.ms(ACTION_TIMEOUT_MS)):
                field_.fill(NAME_FILLER, timeout=self.ms(ACTION_TIMEOUT_MS))
        sent_by = ("Enter" if found.get("body_is_input") else
                   "form.requestSubmit()" if found.get("form") else "Ctrl+Enter")
        if found.get("submit"):
            button = page.locator('[data-kurabe="submit"]')
            try:
                button.click(timeout=self.ms(ACTION_TIMEOUT_MS))
            except _OutOfTime:
                raise
            except Exception:
                if self.closed:
                    raise _OutOfTime("the page stopped answering") from None
                button.dispatch_event("click", timeout=self.ms(ACTION_TIMEOUT_MS))
        elif found.get("body_is_input"):
            page.locator('[data-kurabe="body"]').press("Enter", timeout=self.ms(ACTION_TIMEOUT_MS))
        elif found.get("form"):
            self.eval(_REQUEST_SUBMIT_JS)
        else:
            page.locator('[data-kurabe="body"]').press("Control+Enter",
                                                       timeout=self.ms(ACTION_TIMEOUT_MS))
        shown = self.wait_text(wait_for, wait_ms)
        how = f"typed into {found['body']}, submitted with {found.get('submit') or sent_by}"
        return shown, how, found

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        try:
            self.context.close()
        except Exception:
            pass


def _first_line(e: BaseException | str, limit: int = 200) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__ if isinstance(e, BaseException) else ""
    return line[:limit]


def _error_text(e) -> str:
    name, message = getattr(e, "name", None), getattr(e, "message", None)
    if name and message is not None and not str(message).startswith(str(name)):
        return f"{name}: {message}"
    return str(message if message is not None else e)


def _script_errors(errors: list[str]) -> list[str]:
    """Errors that are the page's own, not the echo of a request we blocked."""
    return [e for e in errors if not e.startswith("Failed to load resource")]


# -- scenarios -------------------------------------------------------------------------------

class _Checks:
    def __init__(self):
        self.items: dict[str, SubCheck] = {}
        self.shown_any = False  # the functional run got at least one entry on the screen

    def add(self, name: str, passed: bool, detail: str) -> None:
        self.items[name] = SubCheck(name, bool(passed), detail)

    def rest(self, names, detail: str) -> None:
        for n in names:
            if n not in self.items:
                self.add(n, False, detail)


def _page_checks(s: _Session, out: _Checks, *, japanese: bool) -> bool:
    """loads and japanese; True when the page loaded (self_contained is added at the end)."""
    error = s.load()
    errors = _script_errors(s.errors)
    if error:
        out.add("loads", False, f"did not load: {error}")
        return False
    if errors:
        out.add("loads", False, f"script error on load: {_first_line(errors[0])}")
    else:
        out.add("loads", True, f"loaded in {s.load_s:.2f} s with no script errors")
    if japanese:
        share, letters = japanese_share(s.eval(_VISIBLE_TEXT_JS) or "")
        if share is None:
            out.add("japanese", False, "the page shows no text")
        else:
            out.add("japanese", share >= JAPANESE_MIN_SHARE,
                    f"{share:.0%} of {letters} letters in the visible text are Japanese "
                    f"(needs {JAPANESE_MIN_SHARE:.0%})")
    return True


def _self_contained(s: _Session, out: _Checks) -> None:
    if s.requests:
        out.add("self_contained", False,
                f"{len(s.requests)} request(s) blocked, first {s.requests[0][:120]}")
    else:
        out.add("self_contained", True, "made no request beyond its own page")


def _order(text: str, older: str, newer: str) -> tuple[bool, str]:
    i_old, i_new = text.find(older), text.find(newer)
    if i_old < 0 or i_new < 0:
        return False, "the posts are not both shown"
    if i_new < i_old:
        return True, "the second post is shown above the first"
    return False, "the first post is shown above the second (oldest first)"


def _list_scenario(s: _Session, out: _Checks, kind: str, *, japanese: bool) -> None:
    """bbs and todo: add two entries, see them, check order/clearing, reload."""
    entries = BBS_MESSAGES if kind == "bbs" else TODO_ITEMS
    render_name = "posts_render" if kind == "bbs" else "adds_items"
    clear_name = "form_clears" if kind == "bbs" else "input_clears"
    if not _page_checks(s, out, japanese=japanese):
        return
    shown: list[bool] = []
    cleared: list[bool | None] = []
    how = ""
    for entry in entries:
        wait = RENDER_TIMEOUT_MS if all(shown) else SHORT_WAIT_MS
        ok, how, found = s.submit(entry, None, entry, wait)
        if not found.get("body"):
            out.rest([n for n in SUBCHECKS[kind] if n not in XSS_CHECKS], how)
            return
        shown.append(ok)
        out.shown_any = out.shown_any or ok
        after = s.find_form()
        cleared.append(None if after.get("body") is None else (after.get("value") or "") == "")
    text = s.text()
    visible = [e in text for e in entries]
    out.shown_any = any(visible)
    if all(visible):
        out.add(render_name, True, f"both entries shown ({how})")
    else:
        missing = ", ".join(str(i + 1) for i, v in enumerate(visible) if not v)
        out.add(render_name, False, f"entry {missing} not shown after submitting ({how})")
    if kind == "bbs":
        passed, detail = _order(text, entries[0], entries[1])
        out.add("newest_first", passed, detail)
    if all(c is True for c in cleared):
        out.add(clear_name, True, "the text field is empty after each submit")
    elif any(c is None for c in cleared):
        out.add(clear_name, False, "the text field was gone after submitting")
    else:
        out.add(clear_name, False, "the text field still holds the text after submitting")
    if not any(visible):
        out.add("persists", False, "nothing was shown, so nothing to keep")
        return
    error = s.load(reload=True)
    if error:
        out.add("persists", False, f"reload failed: {error}")
        return
    s.wait_text(entries[-1], RELOAD_WAIT_MS)
    text = s.text()
    kept = [e in text for e, v in zip(entries, visible, strict=True) if v]
    if all(kept):
        order = ""
        if kind == "bbs" and all(visible):
            order = ", newest first" if _order(text, *entries)[0] else ", but oldest first"
        out.add("persists", True, f"{len(kept)} entr{'y' if len(kept) == 1 else 'ies'} "
                                  f"still shown after a reload{order}")
    else:
        out.add("persists", False, "entries are gone after a reload (not stored)")


_PAYLOAD_DIALOG = re.compile(r"^\w+: xss\d+$")


def _payload_dialogs(dialogs: list[str]) -> list[str]:
    """The dialogs a payload opened (its alert says xss1, xss2, ...); the page's own
    dialogs (a welcome alert) are recorded in the result but are no XSS."""
    return [d for d in dialogs if _PAYLOAD_DIALOG.match(d)]


def _xss_scenario(s: _Session, out: _Checks) -> None:
    """Post the payloads (marked so a post is seen even when its markup is swallowed), hover
    everything, reload, hover again; no script may run, no dialog open, all text literal."""
    error = s.load()
    if error:
        out.rest(XSS_CHECKS, f"not tested: the page did not load ({error})")
        return
    posted: list[bool] = []
    how = ""
    for i, payload in enumerate(XSS_PAYLOADS):
        marker = f"xss{i + 1}:"
        wait = RENDER_TIMEOUT_MS if all(posted) else SHORT_WAIT_MS
        ok, how, found = s.submit(f"{marker} {payload}", f"{marker} {payload}", marker, wait)
        if not found.get("body"):
            out.rest(XSS_CHECKS, f"not tested: {how}")
            return
        posted.append(ok)
    if not any(posted):
        out.rest(XSS_CHECKS, "not tested: no payload post was shown")
        return
    s.eval(_HOVER_ALL_JS)
    s.page.wait_for_timeout(s.ms(EVENT_WAIT_MS))
    ran = s.eval(_XSS_VALUE_JS)
    text = s.text()
    literal = [p for p, ok in zip(XSS_PAYLOADS, posted, strict=True) if ok and p in text]
    dialogs_live = len(_payload_dialogs(s.dialogs))
    ran_after, reloaded = None, False
    kept = out.items.get("persists")
    # stored payloads come back on a reload (only worth one when entries survive reloads)
    if (kept is None or kept.passed) and s.load(reload=True) is None:
        reloaded = True
        s.wait_text("xss", RELOAD_WAIT_MS)
        s.eval(_HOVER_ALL_JS)
        s.page.wait_for_timeout(s.ms(EVENT_WAIT_MS))
        ran_after = s.eval(_XSS_VALUE_JS)
    shown = sum(posted)
    if ran is None and ran_after is None:
        out.add("xss_no_script", True, f"no payload script ran ({shown} payload posts shown, "
                                       f"hovered{', reloaded, hovered' if reloaded else ''})")
    else:
        which = ran if ran is not None else ran_after
        assert which is not None  # not both None here
        when = "after posting" if ran is not None else "after a reload"
        out.add("xss_no_script", False,
                f"payload {which} ran {when}: {XSS_PAYLOADS[int(which) - 1][:60]}"
                if which.isdigit() and 0 < int(which) <= len(XSS_PAYLOADS)
                else f"window.__xss = {which} {when}")
    opened = _payload_dialogs(s.dialogs)
    if opened:
        when = "after posting" if dialogs_live else "after a reload"
        out.add("xss_no_dialog", False, f"{len(opened)} payload dialog(s) {when}: {opened[0]}")
    else:
        out.add("xss_no_dialog", True, "no payload opened a dialog")
    if len(literal) == len(XSS_PAYLOADS):
        out.add("xss_literal", True, "every payload is shown as literal text")
    else:
        missing = [str(i + 1) for i, p in enumerate(XSS_PAYLOADS) if p not in literal]
        out.add("xss_literal", False, f"payload(s) {', '.join(missing)} not shown as literal "
                                      "text (swallowed as markup or altered)")


def _counter_scenario(s: _Session, out: _Checks, *, japanese: bool) -> None:
    if not _page_checks(s, out, japanese=japanese):
        return
    button = s.eval(_BUTTONS_JS)
    if not button:
        out.add("click_changes", False, "no button found")
        return
    seen = [_numbers(s.text())]
    for _ in range(2):
        before = s.text()
        locator = s.page.locator('[data-kurabe="button"]')
        try:
            locator.click(timeout=s.ms(ACTION_TIMEOUT_MS))
        except _OutOfTime:
            raise
        except Exception as e:
            out.add("click_changes", False, f"could not click {button}: {_first_line(e)}")
            return
        try:
            s.page.wait_for_function("t => document.body && document.body.innerText !== t",
                                     arg=before, timeout=s.ms(CLICK_WAIT_MS), polling=50)
        except _OutOfTime:
            raise
        except Exception:
            pass
        seen.append(_numbers(s.text()))
    change = _number_change(seen)
    if change is None:
        out.add("click_changes", False, f"clicking {button} twice changed no number on the page")
        out.add("persists", False, "not tested: no number changed")
        return
    index, story = change
    out.add("click_changes", True, f"clicking {button} changed the number: {story}")
    error = s.load(reload=True)
    if error:
        out.add("persists", False, f"reload failed: {error}")
        return
    after = _numbers(s.text())
    last = seen[-1][index]
    if index < len(after) and after[index] == last:
        out.add("persists", True, f"{last} is still shown after a reload")
    else:
        now = after[index] if index < len(after) else "nothing"
        out.add("persists", False, f"after a reload it shows {now}, not {last} (not stored)")


_NUMBER = re.compile(r"[-−]?\d+")


def _numbers(text: str) -> list[int]:
    found = _NUMBER.findall(unicodedata.normalize("NFKC", text))
    return [int(n.replace("−", "-")) for n in found]


def _number_change(seen: list[list[int]]) -> tuple[int, str] | None:
    """(position, "0 → 1 → 2") of the first number on the page (counted in reading order)
    that changed on each click, else None."""
    for i in range(min(len(x) for x in seen)):
        a, b, c = (x[i] for x in seen)
        if a != b and b != c:
            return i, f"{a} → {b} → {c}"
    return None


def _page_scenario(s: _Session, out: _Checks, *, japanese: bool) -> None:
    _page_checks(s, out, japanese=japanese)


# -- public API ------------------------------------------------------------------------------

def _run(s_factory: Callable[[], _Session], scenario: Callable[[_Session, _Checks], None],
         out: _Checks, names: tuple[str, ...], result: CodeCheckResult,
         *, network: bool) -> None:
    s = s_factory()
    try:
        scenario(s, out)
        loads = out.items.get("loads")
        if loads is not None and not loads.passed and loads.detail.startswith("did not load"):
            out.rest(names, "not tested: the page did not load")
        else:
            out.rest(names, "not tested: an earlier step failed")
    except _OutOfTime as e:
        out.rest(names, f"timed out ({_first_line(e)})")
    except Exception as e:
        if s.closed:
            out.rest(names, "timed out (the page stopped answering)")
        elif type(e).__name__ == "TimeoutError" or s.deadline - time.monotonic() < 0.25:
            out.rest(names, f"timed out ({_first_line(e)})")
        else:
            out.rest(names, f"the check could not go on: {_first_line(e)}")
    finally:
        if network and "loads" in out.items:
            _self_contained(s, out)
        s.close()
        for url in s.requests:
            if url not in result.requests_blocked:
                result.requests_blocked.append(url)
        result.console_errors += [e[:300] for e in s.errors][:50]
        result.dialogs += s.dialogs


def check_app(kind: str, html: str | None, browser, *, japanese: bool = True,
              budget_s: float = SCENARIO_BUDGET_S) -> CodeCheckResult:
    """Check one single-file HTML app of ``kind`` (bbs, todo, counter; anything else gets the
    page checks only) in ``browser`` (a Playwright sync ``Browser``).

    ``html`` None (nothing extracted) gives ``extracted=False`` and every sub-check failed.
    ``japanese=False`` leaves out the Japanese-UI sub-check. ``budget_s``: the time each
    scenario (a fresh context) may take; a page still busy past it is closed.
    """
    norm = KIND_ALIASES.get((kind or "").strip().lower(), "page")
    names = tuple(n for n in SUBCHECKS[norm] if japanese or n != "japanese")
    if html is not None and not html.strip():
        html = None
    result = CodeCheckResult(kind=norm, extracted=html is not None)
    out = _Checks()
    t0 = time.monotonic()
    if html is None:
        out.rest(names, "no HTML document in the answer")
    else:
        make = lambda: _Session(browser, html, budget_s)  # noqa: E731
        functional = {"bbs": lambda s, o: _list_scenario(s, o, "bbs", japanese=japanese),
                      "todo": lambda s, o: _list_scenario(s, o, "todo", japanese=japanese),
                      "counter": lambda s, o: _counter_scenario(s, o, japanese=japanese),
                      "page": lambda s, o: _page_scenario(s, o, japanese=japanese)}[norm]
        first = tuple(n for n in names if n not in XSS_CHECKS)
        _run(make, functional, out, first, result, network=True)
        if any(n in names for n in XSS_CHECKS):
            if out.shown_any:
                _run(make, _xss_scenario, out, XSS_CHECKS, result, network=False)
            else:
                out.rest(XSS_CHECKS, "not tested: posting showed nothing in the functional run")
    result.checks = [out.items[n] for n in names]
    result.elapsed_s = time.monotonic() - t0
    return result


def check_bbs(html: str | None, *, browser, japanese: bool = True) -> CodeCheckResult:
    """A bulletin board: a message form (name fields optional) and the posts, newest first,
    kept in localStorage, escaped."""
    return check_app("bbs", html, browser, japanese=japanese)


def check_todo(html: str | None, *, browser, japanese: bool = True) -> CodeCheckResult:
    """A to-do list: a text input that adds items, kept in localStorage, escaped."""
    return check_app("todo", html, browser, japanese=japanese)


def check_counter(html: str | None, *, browser, japanese: bool = True) -> CodeCheckResult:
    """A counter: clicking its button changes a number shown on the page, and the number is
    still there after a reload."""
    return check_app("counter", html, browser, japanese=japanese)


def check_page(html: str | None, *, browser, japanese: bool = True) -> CodeCheckResult:
    """Any page: loads without script errors, self-contained, Japanese UI."""
    return check_app("page", html, browser, japanese=japanese)


def check_answer(kind: str, answer: str, browser, *, japanese: bool = True) -> CodeCheckResult:
    """``extract_html`` then ``check_app``."""
    return check_app(kind, extract_html(answer), browser, japanese=japanese)
