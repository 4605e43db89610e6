"""Key fields of template-free documents: rules that find a value with a fixed meaning
(a receipt's company, date, total) among the text lines the OCR read on a page.

Pure functions of the lines' text, confidence and box: no image, no database. A key field's
`find` rule (forms.templates.KeyFind) says which keywords label its value, which lines
never give it, where on the page to look and how to choose among candidates:

- `values_in`: the values of the field's type in one line's text, normalised to the type
  (amounts 9.00, dates in the field's first date format), each passing its validators;
- `keyword_hit`: the best keyword a text holds (earlier keywords are better);
- `row_label`: the line that labels a value standing alone on its row ("Total :" | "9.00");
- `candidates`: every value the rule could mean, each with its keyword (or none);
- `find_key_field`: the chosen value, the lines it came from, and how sure the rule is.

The confidence (0-100) is the OCR's confidence in the lines the value came from times the
rule's own: a value labelled by a keyword counts in full, one found by position alone 0.6,
and either is discounted to 0.6 when other candidates of the same standing disagree. The
evidence (`key-keyword`, `key-window`, with `-several` when candidates disagreed;
`key-near` for a keyword line whose value could not be read; `key-none`) is the group a
calibration fits a floor for: key fields never share a group with text lines.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from kerani.core.boxes import Box
from kerani.core.text import fold_whitespace
from kerani.forms.templates import KeyFieldSpec
from kerani.forms.validators import date_format_regex, format_date, parse_date

KEY_EVIDENCE = "key-"  # every key field's evidence starts so (microtasks.routing reads it)
KEYWORD_WEIGHT = 1.0  # a value a keyword labels
WINDOW_WEIGHT = 0.6  # a value found by position alone
SEVERAL_WEIGHT = 0.6  # other candidates of the same standing disagree
NEAR_WEIGHT = 0.2  # a keyword line whose value is not one of the type
SHOWN_LINES = 3  # lines shown to people when no candidate was found
# Dates outside these years are figures that happen to fit a format (codes, counts).
YEARS = (1950, 2100)


def is_key_evidence(evidence: str) -> bool:
    """Whether a guess's evidence says a key field rule made it."""
    return evidence.startswith(KEY_EVIDENCE)


@dataclass(frozen=True)
class Line:
    """One text line of a page as the OCR read it (box in the page's pixels)."""

    text: str
    confidence: float
    box: Box


@dataclass(frozen=True)
class Candidate:
    """A value a rule could mean: where it is, and which keyword labels it (None: none)."""

    value: str  # normalised to the field's type
    line: int  # index of the line holding it
    start: int  # where it starts in that line's text
    keyword: int | None  # index in find.keywords of the keyword labelling it
    label: tuple[int, ...] = ()  # other lines the value comes from (its keyword's, a name's)
    number: Decimal | None = None  # numeric fields: the value as a number
    context: tuple[int, ...] = ()  # lines shown beside it that are no part of it (its row)


@dataclass(frozen=True)
class KeyValue:
    """A key field's guess: normalised text ('' when none), confidence, evidence, lines."""

    name: str
    kind: str  # the key field's type
    text: str
    confidence: float  # 0-100
    evidence: str
    lines: tuple[int, ...]  # the lines it came from (value line first), or the lines shown
    box: Box | None  # their union: what the snippet shows (None: the page has no lines)


# ---- text ----------------------------------------------------------------------------------


@lru_cache(maxsize=512)
def keyword_pattern(keyword: str) -> re.Pattern[str]:
    """A keyword as a regex: any case, its words with any (or no) punctuation between them,
    not inside a longer word ('TOTAL' is not in 'SUBTOTAL'; 'SDN BHD' is in 'SDN.BHD')."""
    parts = re.findall(r"[A-Za-z0-9]+", keyword)
    body = r"[\W_]*".join(re.escape(p) for p in parts)
    return re.compile(rf"(?<![A-Za-z0-9]){body}(?![A-Za-z0-9])", re.IGNORECASE)


@dataclass(frozen=True)
class Hit:
    """Where a text holds a keyword: the keyword's index in its list, and its span."""

    keyword: int
    start: int
    end: int


def keyword_hit(text: str, keywords: Sequence[str]) -> Hit | None:
    """The first of `keywords` (in their order) that `text` holds, or None."""
    for i, keyword in enumerate(keywords):
        m = keyword_pattern(keyword).search(text)
        if m:
            return Hit(i, m.start(), m.end())
    return None


def _letters(text: str) -> int:
    return sum(c.isalpha() for c in text)


def looks_like_words(text: str) -> bool:
    """A line a name could be: three letters or more, and mostly letters."""
    chars = [c for c in text if not c.isspace()]
    return _letters(text) >= 3 and _letters(text) * 2 >= len(chars)


_AMOUNT = re.compile(
    r"(?P<neg>-\s*)?(?:RM|\$)?\s*(?<![\d.,])(?P<whole>\d{1,3}(?:,\d{3})+|\d+)\.(?P<cents>\d{2})"
    r"(?![\d%])",  # 6.00% is a rate, not an amount
    re.IGNORECASE,
)
CURRENCY = re.compile(r"\b(?:RM|MYR)\b|\$", re.IGNORECASE)  # not a label: part of the amount
_NUMBER = re.compile(r"(?<![\d.,])\d+(?![\d]|[.,]\d)")


def _amounts(text: str) -> list[tuple[int, str]]:
    out = []
    for m in _AMOUNT.finditer(text):
        if m.group("neg"):
            continue  # a discount or a rounding adjustment, never what was paid
        whole = int(m.group("whole").replace(",", ""))
        out.append((m.start("whole"), f"{whole}.{m.group('cents')}"))
    return out


def _dates(text: str, read_formats: Sequence[str], write_format: str) -> list[tuple[int, str]]:
    found: dict[int, tuple[int, str]] = {}  # start -> (length, value): the longest wins
    for fmt in read_formats:
        pattern = date_format_regex(fmt).pattern
        for m in re.finditer(rf"(?<![0-9A-Za-z])(?:{pattern})(?![0-9])", text):
            d = parse_date(m.group(), [fmt])
            if d is None or not YEARS[0] <= d.year <= YEARS[1]:
                continue
            length = m.end() - m.start()
            if m.start() not in found or found[m.start()][0] < length:
                found[m.start()] = (length, format_date(d, write_format))
    return sorted((start, value) for start, (_n, value) in found.items())


def _tokens(text: str) -> list[tuple[int, str]]:
    # Single words and pairs of words (a phone number printed "03 12345678"), punctuation
    # around them stripped.
    words = [(m.start(), m.group()) for m in re.finditer(r"\S+", text)]
    out = []
    for i, (start, word) in enumerate(words):
        out.append((start, word.strip(",;:()[]")))
        if i + 1 < len(words):
            out.append((start, f"{word} {words[i + 1][1]}".strip(",;:()[]")))
    return [(s, w) for s, w in out if w]


def values_in(spec: KeyFieldSpec, text: str) -> list[tuple[int, str]]:
    """The values of the key field's type in `text`: (where each starts, normalised value),
    each passing the field's validators. Text fields are not split: see `candidates`."""
    if spec.type == "amount":
        found = _amounts(text)
    elif spec.type == "number":
        found = [(m.start(), m.group()) for m in _NUMBER.finditer(text)]
    elif spec.type == "date":
        found = _dates(text, spec.find.read_formats or spec.formats, spec.formats[0])
    else:
        found = _tokens(text)
    return [(start, v) for start, v in found if spec.problem(v) is None]


def _number(value: str) -> Decimal | None:
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


# ---- geometry ------------------------------------------------------------------------------


def same_row(a: Box, b: Box) -> bool:
    """Whether two boxes stand on one row: they overlap by half the shorter one's height."""
    overlap = min(a[3], b[3]) - max(a[1], b[1])
    return overlap * 2 >= min(a[3] - a[1], b[3] - b[1]) > 0


def row_label(lines: Sequence[Line], i: int) -> int | None:
    """The nearest line left of line `i` on its row with words on it (two letters or more):
    what labels a value printed alone in a column ('Total :' for '9.00'), or None."""
    box = lines[i].box
    left = [
        j
        for j, line in enumerate(lines)
        if j != i
        and line.box[2] <= box[0] + (box[3] - box[1]) // 2
        and same_row(line.box, box)
        and _letters(CURRENCY.sub("", line.text)) >= 2  # "RM" | "88.17" is no label
    ]
    return max(left, key=lambda j: lines[j].box[2]) if left else None


def _next_line(lines: Sequence[Line], i: int, step: int) -> int | None:
    """The line just above (step -1) or below (step 1) line `i`, overlapping it across and
    less than a line's height away, or None."""
    box = lines[i].box
    height = box[3] - box[1]
    near = []
    for j, line in enumerate(lines):
        b = line.box
        gap = box[1] - b[3] if step < 0 else b[1] - box[3]
        across = min(b[2], box[2]) - max(b[0], box[0])
        if j != i and -height // 4 <= gap < height and across > 0 and line.text.strip():
            near.append((gap, j))
    return min(near)[1] if near else None


# A name that goes on: the next line holds the rest ("HOME MASTER HARDWARE &").
_GOES_ON = re.compile(r"(?:&|-|/|\bAND)\s*$", re.IGNORECASE)


def name_lines(spec: KeyFieldSpec, lines: Sequence[Line], i: int) -> list[int]:
    """The lines a name on line `i` spans: with the line above when line `i` starts with a
    keyword (a legal form on a line of its own: 'SDN BHD', 'CO. (M) SDN BHD'), with the
    line below when line `i` ends with '&', '-', '/' or 'AND'; a line joined must look like
    words and hold no excluded word."""

    def joinable(j: int | None) -> int | None:
        ok = (
            j is not None
            and looks_like_words(lines[j].text)
            and keyword_hit(lines[j].text, spec.find.exclude) is None
        )
        return j if ok else None

    text = lines[i].text
    starts = [m.start() for k in spec.find.keywords for m in keyword_pattern(k).finditer(text)]
    above = (
        joinable(_next_line(lines, i, -1)) if starts and _letters(text[: min(starts)]) < 2 else None
    )
    below = joinable(_next_line(lines, i, 1)) if _GOES_ON.search(text) else None
    return [j for j in (above, i, below) if j is not None]


def union(boxes: Sequence[Box]) -> Box:
    """The smallest box holding all of `boxes`."""
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def window(spec: KeyFieldSpec, lines: Sequence[Line]) -> list[int]:
    """The lines the rule looks at, in reading order: all, or the first or last. A line of
    fewer than three letters or digits is specks (a logo, scanner noise), not a line."""
    texted = [i for i, line in enumerate(lines) if sum(c.isalnum() for c in line.text) >= 3]
    n = spec.find.window
    if spec.find.where == "first_lines":
        return texted[:n]
    if spec.find.where == "last_lines":
        return texted[-n:]
    return texted


# ---- the rule ------------------------------------------------------------------------------


def candidates(spec: KeyFieldSpec, lines: Sequence[Line]) -> list[Candidate]:
    """Every value the key field's rule could mean, in reading order.

    A line holding an excluded word gives nothing. A value after a keyword on its own line
    is labelled by it; a value with no words before it on its line is labelled by its row's
    label (`row_label`), which must not be excluded either. Text fields take the whole line
    (a keyword line, or any line that looks like words) with the lines a name wraps over
    (`name_lines`), or with `value: after_keyword` what follows the keyword.
    """
    find = spec.find
    out: list[Candidate] = []
    for i in window(spec, lines):
        text = lines[i].text
        if keyword_hit(text, find.exclude):
            continue
        hit = keyword_hit(text, find.keywords)
        keyword = hit.keyword if hit else None
        if spec.type == "text":
            if find.value == "after_keyword":
                if hit is not None:
                    value = trimmed(spec, text[hit.end :].strip(" :.-#"))
                    if value and spec.problem(value) is None:
                        out.append(Candidate(value, i, hit.end, keyword))
                continue
            if hit is None and not looks_like_words(text):
                continue
            spans = name_lines(spec, lines, i)
            value = trimmed(spec, " ".join(lines[j].text for j in spans))
            if spec.problem(value) is None:
                others = tuple(j for j in spans if j != i)
                out.append(Candidate(value, i, 0, keyword, label=others))
            continue
        for start, value in values_in(spec, text):
            labelled: int | None = None
            label: tuple[int, ...] = ()
            context: tuple[int, ...] = ()
            if hit is not None and hit.end <= start:
                labelled = hit.keyword
            elif _letters(CURRENCY.sub("", text[:start])) < 2:
                j = row_label(lines, i)
                if j is not None:
                    if keyword_hit(lines[j].text, find.exclude):
                        continue  # "CASH" | "50.00": labelled, by what it is not
                    label_hit = keyword_hit(lines[j].text, find.keywords)
                    if label_hit is not None:
                        labelled, label = label_hit.keyword, (j,)
                    else:
                        context = (j,)  # people see what the value stands beside
            out.append(Candidate(value, i, start, labelled, label, _number(value), context))
    return out


def trimmed(spec: KeyFieldSpec, text: str) -> str:
    """A text value as the field keeps it: less what `find.remove` matches, spaces folded."""
    for regex in spec.find.remove:
        text = re.sub(regex, " ", text)
    return fold_whitespace(text)


def keyword_lines(spec: KeyFieldSpec, lines: Sequence[Line]) -> list[int]:
    """The lines of the window that hold a keyword and no excluded word."""
    find = spec.find
    return [
        i
        for i in window(spec, lines)
        if keyword_hit(lines[i].text, find.keywords)
        and not keyword_hit(lines[i].text, find.exclude)
    ]


def stopped(spec: KeyFieldSpec, lines: Sequence[Line], found: list[Candidate]) -> list[Candidate]:
    """The candidates above the first `stop_at` line below the first labelled candidate."""
    labelled = [lines[c.line].box[1] for c in found if c.keyword is not None]
    if not spec.find.stop_at or not labelled:
        return found
    top = min(labelled)
    stops = [
        line.box[1]
        for line in lines
        if line.box[1] > top and keyword_hit(line.text, spec.find.stop_at) is not None
    ]
    if not stops:
        return found
    return [c for c in found if lines[c.line].box[1] < min(stops)]


def _order(c: Candidate, pick: Sequence[str], keywords: int) -> tuple[object, ...]:
    keys: list[object] = []
    for p in pick:
        if p == "keyword":
            keys.append(keywords if c.keyword is None else c.keyword)
        elif p == "first":
            keys.append((c.line, c.start))
        elif p == "last":
            keys.append((-c.line, -c.start))
        elif p in ("largest", "smallest"):
            n = c.number if c.number is not None else Decimal(0)
            keys.append(-n if p == "largest" else n)
    keys.append((c.line, c.start))  # ties: reading order
    return tuple(keys)


def _near(spec: KeyFieldSpec, lines: Sequence[Line]) -> KeyValue | None:
    # A keyword line whose value is not one of the type ("TOTAL 9.0O"): what follows the
    # keyword (or the row's next line) is the guess people correct, read as it stands.
    found = keyword_lines(spec, lines)
    if not found:
        return None
    i = min(found, key=lambda i: (keyword_hit(lines[i].text, spec.find.keywords), i))
    hit = keyword_hit(lines[i].text, spec.find.keywords)
    assert hit is not None
    rest = fold_whitespace(lines[i].text[hit.end :].strip(" :"))
    used = [i]
    figures = spec.type not in ("text", "choice")  # a misread value still shows its figures
    if not rest or (figures and not any(c.isdigit() for c in rest)):
        rest = ""
        right = sorted(
            (
                j
                for j, line in enumerate(lines)
                if j != i
                and line.box[0] >= lines[i].box[2] - 2
                and same_row(line.box, lines[i].box)
                and (not figures or any(c.isdigit() for c in line.text))
            ),
            key=lambda j: lines[j].box[0],
        )
        if right:
            rest, used = fold_whitespace(lines[right[0]].text), [right[0], i]
    conf = NEAR_WEIGHT * min(lines[j].confidence for j in used)
    return KeyValue(
        spec.name,
        spec.type,
        rest,
        round(conf, 1),
        f"{KEY_EVIDENCE}near",
        tuple(used),
        union([lines[j].box for j in used]),
    )


def _nothing(spec: KeyFieldSpec, lines: Sequence[Line]) -> KeyValue:
    # No candidate: people see where the value would most likely be (the first lines, or
    # the last ones for a rule that looks there), a few lines, never the page.
    shown = window(spec, lines)
    if not shown:
        shown = list(range(len(lines)))
    shown = shown[-SHOWN_LINES:] if spec.find.where == "last_lines" else shown[:SHOWN_LINES]
    box = union([lines[j].box for j in shown]) if shown else None
    return KeyValue(spec.name, spec.type, "", 0.0, f"{KEY_EVIDENCE}none", tuple(shown), box)


def find_key_field(spec: KeyFieldSpec, lines: Sequence[Line]) -> KeyValue:
    """The key field's guess from a page's lines (in reading order), with how sure it is.

    A value a keyword labels wins over one found by position alone. When no keyword
    labels a value but a keyword line is there (its value misread: 'TOTAL 64.'), that
    line is the guess unless the values found by position alone all agree: a wrong line
    shown to people cannot be corrected from its snippet, the keyword's line can.
    """
    find = spec.find
    found = stopped(spec, lines, candidates(spec, lines))
    labelled = [c for c in found if c.keyword is not None]
    tier = labelled or ([] if find.require_keyword else found)
    several = len({c.value for c in tier}) > 1
    if not tier or (not labelled and several and keyword_lines(spec, lines)):
        return _near(spec, lines) or _nothing(spec, lines)
    pick = find.pick if labelled or find.otherwise is None else find.otherwise
    best = min(tier, key=lambda c: _order(c, pick, len(find.keywords)))
    # The candidates of the same standing: of the same keyword when keywords rank first.
    if pick[0] == "keyword":
        several = len({c.value for c in tier if c.keyword == best.keyword}) > 1
    weight = (KEYWORD_WEIGHT if labelled else WINDOW_WEIGHT) * (SEVERAL_WEIGHT if several else 1)
    used = (best.line, *best.label)
    ocr = min(lines[j].confidence for j in used)
    evidence = f"{KEY_EVIDENCE}{'keyword' if labelled else 'window'}"
    shown = used + best.context
    return KeyValue(
        spec.name,
        spec.type,
        best.value,
        round(weight * ocr, 1),
        evidence + ("-several" if several else ""),
        shown,
        union([lines[j].box for j in shown]),
    )


def find_key_fields(specs: Sequence[KeyFieldSpec], lines: Sequence[Line]) -> list[KeyValue]:
    """Every key field's guess from a page's lines, in the template's order."""
    return [find_key_field(spec, lines) for spec in specs]
