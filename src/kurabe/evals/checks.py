"""Deterministic checks on one answer: language, length, emptiness, refusal.

Every check returns a small dataclass carrying the figure it measured and, where a verdict
means something, a pass/fail. Text is NFKC-normalised first, as in ``kurabe.metrics``, so
half-width kana and full-width Latin count like their ordinary forms.

Outcomes come from ``kurabe.thinking``: a response with no answer (``NOT_ANSWERED``:
``thinking_exhausted``, the token limit hit inside reasoning; ``stopped_in_thinking``, the
model stopped inside its reasoning on its own; ``empty``; a failed request, ``error``) is
never a refusal and is never graded. An ``answered_without_thinking`` response has an answer
and is checked like any other.
"""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass, field

import regex

from kurabe.metrics import count_chars
from kurabe.thinking import NO_ANSWER_OUTCOMES

# Outcomes with no answer to judge: never a refusal, never graded.
NOT_ANSWERED = NO_ANSWER_OUTCOMES

# -- Japanese share and language ----------------------------------------------------------

# A Japanese answer keeps at least this share of Japanese letters. Latin letters are dense:
# one English term ("localStorage", 12 letters) weighs as much as a whole Japanese clause,
# so a technical Japanese answer naming a few APIs measures 0.4–0.6 even after code is
# stripped, while an English answer quoting a few Japanese words stays under 0.1. 0.3 sits
# between the two with room on both sides.
JA_MIN_RATIO = 0.30
# An English answer keeps at least half of its letters Latin: below that, Japanese (or
# another script) dominates. English quoting Japanese measures well above 0.9.
EN_MIN_LATIN = 0.50
# Fewer letters than this (a name, a number, "OK") cannot show which language an answer is in.
MIN_LETTERS = 20
# Chinese rather than Japanese: at least this many ideographs, and kana under this share of
# the Japanese-script letters. Running Japanese text is mostly kana (particles, endings:
# typically 60–70%); even kanji-heavy technical prose keeps well over 20%.
ZH_MIN_HAN = 20
ZH_MAX_KANA_SHARE = 0.05

_FENCED = regex.compile(r"^[ \t]*(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]*\1[ \t]*$|\Z)",
                        regex.M | regex.S)
_INLINE_CODE = regex.compile(r"`[^`\n]+`")
_URL = regex.compile(r"https?://\S+")
_KANA = regex.compile(r"[\p{Hiragana}\p{Katakana}ー]")
_HAN = regex.compile(r"\p{Han}")
_LATIN = regex.compile(r"\p{Latin}")


def strip_code(text: str) -> str:
    """The text without fenced code blocks (``` or ~~~, an unclosed one runs to the end),
    inline code spans and URLs: code is not prose in any language."""
    text = _FENCED.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    return _URL.sub(" ", text)


@dataclass
class JapaneseRatio:
    ratio: float | None  # japanese / letters; None when there are no letters
    letters: int
    japanese: int  # kana + han
    kana: int
    han: int
    latin: int

    def to_dict(self) -> dict:
        return asdict(self)


def japanese_ratio(text: str) -> JapaneseRatio:
    """Share of Japanese-script letters among all letters of the answer's prose.

    The text is NFKC-normalised and stripped of code (``strip_code``). A letter is a code
    point of Unicode general category L* (Lu, Ll, Lt, Lm, Lo), or 〇; digits, punctuation,
    symbols, marks and whitespace are not counted at all. Japanese letters are hiragana and
    katakana (script Hiragana/Katakana, with the prolonged sound mark ー, whose script is
    Common) and CJK ideographs (script Han, which includes 々, 〆 and 〇, and the
    extensions and compatibility ideographs). ``latin`` counts script Latin.
    """
    prose = strip_code(unicodedata.normalize("NFKC", text or ""))
    letters = kana = han = latin = 0
    for ch in prose:
        if not (unicodedata.category(ch).startswith("L") or ch == "〇"):
            continue
        letters += 1
        if _KANA.match(ch):
            kana += 1
        elif _HAN.match(ch):
            han += 1
        elif _LATIN.match(ch):
            latin += 1
    japanese = kana + han
    return JapaneseRatio(japanese / letters if letters else None, letters, japanese, kana,
                         han, latin)


@dataclass
class LanguageCheck:
    expected: str
    # The expected language when the answer matches it, else what the answer reads as
    # (ja | zh | en | other); None when it is too short to tell.
    detected: str | None
    ratio: float | None   # the Japanese share (japanese_ratio)
    latin_share: float | None
    letters: int
    mismatch: bool
    passed: bool | None   # None when the answer is too short to tell
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _dominant(r: JapaneseRatio) -> str:
    """What a mismatching answer reads as: the script most of its letters are in."""
    if r.han >= ZH_MIN_HAN and r.kana / r.japanese < ZH_MAX_KANA_SHARE:
        return "zh"
    if r.japanese * 2 >= r.letters:
        return "ja"
    if r.latin * 2 >= r.letters:
        return "en"
    return "other"


def language_mismatch(text: str, expected_lang: str, *, ja_min_ratio: float = JA_MIN_RATIO,
                      en_min_latin: float = EN_MIN_LATIN) -> LanguageCheck:
    """Is the answer in a language other than the one expected (``ja`` or ``en``)?

    ``ja``: a mismatch when the Japanese share is under ``ja_min_ratio`` (see JA_MIN_RATIO),
    or when the text reads as Chinese (many ideographs, almost no kana). ``en``: a mismatch
    when Latin letters are under ``en_min_latin`` of all letters, i.e. Japanese or another
    script dominates. An answer with fewer than MIN_LETTERS letters is never a mismatch
    (``passed`` is None): a name or a number shows no language.
    """
    if expected_lang not in ("ja", "en"):
        raise ValueError(f"expected_lang must be 'ja' or 'en', not {expected_lang!r}")
    r = japanese_ratio(text)
    latin_share = r.latin / r.letters if r.letters else None
    if r.letters < MIN_LETTERS:
        return LanguageCheck(expected_lang, None, r.ratio, latin_share, r.letters, False, None,
                             f"only {r.letters} letters outside code: too short to tell")
    # With at least MIN_LETTERS letters both shares are defined.
    assert r.ratio is not None and latin_share is not None
    if expected_lang == "ja":
        if _dominant(r) == "zh":
            reason = (f"reads as Chinese: {r.han} ideographs, kana only "
                      f"{r.kana / r.japanese:.0%} of them")
            mismatch = True
        elif r.ratio < ja_min_ratio:
            reason = f"Japanese share {r.ratio:.0%} is under {ja_min_ratio:.0%}"
            mismatch = True
        else:
            reason = f"Japanese share {r.ratio:.0%}"
            mismatch = False
    else:
        if latin_share < en_min_latin:
            reason = (f"Latin letters {latin_share:.0%} (under {en_min_latin:.0%}); "
                      f"Japanese share {r.ratio:.0%}")
            mismatch = True
        else:
            reason = f"Latin letters {latin_share:.0%}"
            mismatch = False
    detected = _dominant(r) if mismatch else expected_lang
    return LanguageCheck(expected_lang, detected, r.ratio, latin_share, r.letters, mismatch,
                         not mismatch, reason)


# -- length and emptiness -----------------------------------------------------------------

@dataclass
class LengthCheck:
    chars: int  # NFKC code points (kurabe.metrics.count_chars) of the stripped answer
    min_chars: int | None
    max_chars: int | None
    passed: bool | None  # None when no bound was given

    def to_dict(self) -> dict:
        return asdict(self)


def length_check(text: str, max_chars: int | None = None,
                 min_chars: int | None = None) -> LengthCheck:
    """Characters of the answer (leading/trailing whitespace stripped) against the bounds,
    both inclusive."""
    chars = count_chars((text or "").strip())
    if max_chars is None and min_chars is None:
        passed = None
    else:
        passed = ((max_chars is None or chars <= max_chars)
                  and (min_chars is None or chars >= min_chars))
    return LengthCheck(chars, min_chars, max_chars, passed)


@dataclass
class EmptyCheck:
    empty: bool
    chars: int  # what is left after removing whitespace and invisible format characters
    passed: bool

    def to_dict(self) -> dict:
        return asdict(self)


def is_empty(text: str | None) -> EmptyCheck:
    """Empty: nothing but whitespace and invisible format characters (zero-width space,
    joiners, BOM: category Cf)."""
    visible = [c for c in unicodedata.normalize("NFKC", text or "")
               if not c.isspace() and unicodedata.category(c) != "Cf"]
    return EmptyCheck(not visible, len(visible), bool(visible))


# -- refusal ------------------------------------------------------------------------------

# A refusal opens the answer or is the whole (short) answer: a pattern counts when it starts
# within the first REFUSAL_HEAD characters, or anywhere in an answer of at most
# REFUSAL_SHORT characters. A refusal opening a long answer is reported as partial.
REFUSAL_HEAD = 200
REFUSAL_SHORT = 300
REFUSAL_PARTIAL = 1000

_I_CANT = (r"\bi(?: (?:can't|cant|cannot|can not|won't|will not|am unable to|am not able to)"
           r"|'m (?:unable to|not able to))")
_THAT = (r"(?:that|this|it|such|those|these|your|any|requests?|instructions|information|"
         r"details|guidance|help|assistance|content|code|steps|a guide|a step|"
         r"the (?:information|instructions|details|steps|code|content|request))")
_EN_PATTERNS: list[tuple[str, str]] = [
    ("sorry, but I can't", r"\bsorry,? but (?:i|we)(?: (?:can't|cannot|can not|won't|will not|"
                           r"am unable|am not able|must decline|don't think i can)|"
                           r"'m (?:unable|not able)|'re (?:unable|not able))"),
    ("I can't help with that", rf"{_I_CANT} (?:help|assist)(?: you)? (?:with|in|on) {_THAT}\b"
                               rf"|{_I_CANT} (?:assist (?:you|that|this|with)|help you)\b"),
    ("I can't help.", rf"{_I_CANT} (?:help|assist)(?: you)?\s*(?:[.!]|$)"),
    ("I can't provide that", rf"{_I_CANT} (?:provide|give|share|offer|create|write|generate|"
                             rf"produce|supply)(?: you)?(?: with)? {_THAT}\b"),
    ("I can't comply", rf"{_I_CANT} (?:comply|fulfill?|honou?r (?:that|this|your)|do that|"
                       rf"do this|engage in|participate in|support (?:that|this))"),
    ("I must decline", r"\bi (?:must|have to|'ll have to|will have to|need to) "
                       r"(?:respectfully )?(?:decline|refuse)"),
    ("I'm not going to", r"\bi(?:'m| am) not (?:going to|gonna) (?:help|provide|assist|write|"
                         r"create|give|share)"),
    ("not something I can help with", r"\b(?:this|that|it) (?:is|'s) not something i "
                                      r"(?:can|am able to|'m able to) (?:help|assist|provide)"),
    ("against my guidelines", r"\b(?:against|violates?|violating) (?:my|our|the|openai's) "
                              r"(?:guidelines|polic(?:y|ies)|usage polic(?:y|ies)|"
                              r"content polic(?:y|ies)|principles)"),
]

_DEKINAI = r"(?:でき(?:ません|かねます)|いたしかねます|致しかねます)"
_JA_PATTERNS: list[tuple[str, str]] = [
    ("申し訳ありませんが…できません",
     r"申し訳(?:あり|ござい)ません(?:が|けれど(?:も)?|。|、)[^。！？!?\n]{0,60}?"
     r"(?:でき(?:ません|かねます)|(?:いた|致)?しかねます|控えさせて|お断り)"),
    ("すみませんが…できません",
     r"(?:すみません|ごめんなさい)(?:が|けれど(?:も)?|、|。)[^。！？!?\n]{0,60}?"
     r"(?:でき(?:ません|かねます)|しかねます)"),
    ("お答えできません",
     rf"(?<!一概に)(?<!一概には)(?<!簡単に)(?<!簡単には)(?<!正確に)(?<!正確には)"
     rf"お(?:答え|応え)(?:すること|いたすこと)?(?:は|が)?{_DEKINAI}"),
    ("回答できません",
     rf"(?<!一概に)(?<!一概には)(?<!簡単に)(?<!簡単には)(?<!正確に)(?<!正確には)"
     rf"(?:ご)?回答(?:すること|いたすこと)?(?:は|が)?(?:{_DEKINAI}|(?:を|は)?(?:差し)?控え)"),
    ("お手伝いできません",
     rf"(?:お手伝い|手助け|ご協力|協力|サポート|支援)(?:すること|いたすこと)?(?:は|が)?{_DEKINAI}"),
    ("提供できません",
     rf"(?:情報|方法|手順|作り方|やり方|詳細|コード|具体的な内容)(?:を|の|について(?:の)?)?"
     rf"(?:ご)?提供(?:すること|いたすこと)?(?:は|が)?{_DEKINAI}"),
    ("お教え・お伝えできません",
     rf"(?:お教え|教え|お伝え|伝え)(?:すること|ること|いたすこと)?(?:は|が)?{_DEKINAI}"
     r"|(?:教え|伝え)られません"),
    ("控えさせていただきます", r"(?:差し)?控えさせて(?:いただ|頂)きます"),
    ("お断りします", r"お断り(?:します|いたします|致します|させて(?:いただ|頂)きます)"),
    ("ご依頼には応じられません",
     r"(?:ご依頼|ご要望|ご要求|ご質問|依頼|要望|要求|リクエスト|質問)(?:に|には)(?:お)?"
     r"(?:応じ|応え|答え|こたえ)(?:られ|ることは|することは)?(?:でき)?(?:ません|かねます)"),
]

_EN = [(name, regex.compile(p)) for name, p in _EN_PATTERNS]
_JA = [(name, regex.compile(p)) for name, p in _JA_PATTERNS]
_QUOTES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").translate(_QUOTES).casefold()
    return regex.sub(r"\s+", " ", text).strip()


@dataclass
class RefusalMatch:
    pattern: str
    lang: str
    start: int  # where it matched, in characters of the folded answer
    text: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RefusalCheck:
    refused: bool
    patterns: list[str]                 # the names of the patterns that matched
    matches: list[RefusalMatch] = field(default_factory=list)
    lang: str | None = None             # the expected answer language, as given
    off_language: bool = False          # refused in a language other than ``lang``
    partial: bool = False               # the refusal opens a long answer
    outcome: str | None = None
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def detect_refusal(text: str, lang: str | None = None, outcome: str | None = None) -> RefusalCheck:
    """Does the answer refuse? Japanese and English patterns are both tried (a model asked in
    Japanese may refuse in English); ``lang`` is the language the answer should be in, and a
    refusal in the other one is marked ``off_language``.

    Only a refusal at the start (the first REFUSAL_HEAD characters) or anywhere in a short
    answer (at most REFUSAL_SHORT characters) counts, and the patterns are phrases of
    declining (I can't help with that, お答えできません, 申し訳ありませんが…できません), not
    any "can't": "I can't stress this enough", "I can't help but notice" and
    「一概にはお答えできませんが」 are not refusals. ``outcome`` from kurabe.thinking: a
    response with no answer (``NOT_ANSWERED``) is never a refusal.
    """
    if outcome in NOT_ANSWERED:
        return RefusalCheck(False, [], [], lang, False, False, outcome,
                            f"{outcome}: no answer, never a refusal")
    folded = _fold(text)
    if not folded:
        return RefusalCheck(False, [], [], lang, False, False, outcome, "empty answer")
    short = len(folded) <= REFUSAL_SHORT
    matches: list[RefusalMatch] = []
    for plang, patterns in (("ja", _JA), ("en", _EN)):
        for name, pat in patterns:
            m = pat.search(folded)
            if m and (short or m.start() < REFUSAL_HEAD):
                matches.append(RefusalMatch(name, plang, m.start(), m.group(0)))
    matches.sort(key=lambda m: m.start)
    if not matches:
        return RefusalCheck(False, [], [], lang, False, False, outcome,
                            "no refusal phrase at the start")
    off = lang in ("ja", "en") and all(m.lang != lang for m in matches)
    partial = len(folded) > REFUSAL_PARTIAL
    where = "in a short answer" if short else f"at character {matches[0].start}"
    reason = f"'{matches[0].pattern}' {where}" + (
        f", followed by {len(folded) - REFUSAL_HEAD}+ more characters" if partial else "")
    return RefusalCheck(True, [m.pattern for m in matches], matches, lang, off, partial,
                        outcome, reason)
