"""Ground-truth datasets: page images plus the text and box of every field, as truth.jsonl.

A dataset is a folder with `pages/` (images) and `truth.jsonl`, one JSON object per page:
`{"page": "pages/x.png", "fields": [{"name": "...", "box": [x0, y0, x1, y1], "text": "..."}]}`
with boxes in pixels of that page image. The benchmark harness reads any folder in this format.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from kerani.core.boxes import Box, box_iou
from kerani.core.errors import BadInputError
from kerani.core.text import fold_whitespace

TRUTH_FILE = "truth.jsonl"
PAGES_DIR = "pages"


@dataclass(frozen=True)
class TruthField:
    """One field of a page: its name, its box in page pixels, and the correct text."""

    name: str
    box: Box
    text: str


@dataclass(frozen=True)
class TruthPage:
    """One page of a dataset: the image path relative to the dataset folder and its fields."""

    page: str
    fields: list[TruthField]


# ---------------------------------------------------------------------------- text comparison


def texts_match(a: str, b: str) -> bool:
    """True when two texts are equal after whitespace folding: Kerani's 'correct field'."""
    return fold_whitespace(a) == fold_whitespace(b)


# ------------------------------------------------------------------------------------ boxes


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: the edits (keystrokes) that turn `a` into `b`."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def match_by_box(
    predicted: list[Box], truth: list[TruthField], min_iou: float = 0.3
) -> dict[int, int]:
    """Pair predicted boxes with truth fields one-to-one, greedily by highest IoU.

    Returns {predicted index: truth index}; pairs below `min_iou` stay unmatched.
    """
    pairs: list[tuple[float, int, int]] = []
    for pi, pbox in enumerate(predicted):
        for ti, field in enumerate(truth):
            iou = box_iou(pbox, field.box)
            if iou >= min_iou and iou > 0.0:
                pairs.append((iou, pi, ti))
    # Highest IoU first; ties broken by index so the result never depends on sort stability.
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    matched: dict[int, int] = {}
    used_truth: set[int] = set()
    for _iou, pi, ti in pairs:
        if pi in matched or ti in used_truth:
            continue
        matched[pi] = ti
        used_truth.add(ti)
    return matched


# ------------------------------------------------------------------------------ read / write


def _parse_box(value: Any, where: str) -> Box:
    # bool is an int subclass; `true` in a box is a typo, not a coordinate.
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise BadInputError(f"{where}: 'box' must be four whole numbers [x0, y0, x1, y1]")
    x0, y0, x1, y1 = value
    if not (0 <= x0 < x1 and 0 <= y0 < y1):
        raise BadInputError(
            f"{where}: 'box' {value} is empty or negative; expected 0 <= x0 < x1 and 0 <= y0 < y1"
        )
    return (x0, y0, x1, y1)


def _parse_field(value: Any, where: str) -> TruthField:
    if not isinstance(value, dict):
        raise BadInputError(f"{where}: expected an object with 'name', 'box' and 'text'")
    missing = [k for k in ("name", "box", "text") if k not in value]
    if missing:
        raise BadInputError(f"{where}: missing key {', '.join(repr(k) for k in missing)}")
    name, text = value["name"], value["text"]
    if not isinstance(name, str) or not name:
        raise BadInputError(f"{where}: 'name' must be a non-empty string")
    if not isinstance(text, str):
        raise BadInputError(f"{where} ({name}): 'text' must be a string")
    return TruthField(name=name, box=_parse_box(value["box"], f"{where} ({name})"), text=text)


def _page_path(dataset_dir: Path, page: str, where: str) -> Path:
    # The page path comes from a file someone gave us: keep it inside the dataset folder.
    rel = Path(page)
    if rel.is_absolute() or ".." in rel.parts:
        raise BadInputError(f"{where}: page {page!r} must be a path inside the dataset folder")
    path = dataset_dir / rel
    if not path.is_file():
        raise BadInputError(f"{where}: page image {page!r} not found at {path}")
    return path


def _image_size(path: Path, where: str) -> tuple[int, int]:
    try:
        with Image.open(path) as im:
            return im.size
    except (UnidentifiedImageError, OSError) as e:
        raise BadInputError(f"{where}: page image {path} cannot be read: {e}") from e


def _parse_line(dataset_dir: Path, line: str, where: str) -> TruthPage:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as e:
        raise BadInputError(f"{where}: not valid JSON: {e.msg} (column {e.colno})") from e
    if not isinstance(data, dict):
        raise BadInputError(f"{where}: expected an object with 'page' and 'fields'")
    missing = [k for k in ("page", "fields") if k not in data]
    if missing:
        raise BadInputError(f"{where}: missing key {', '.join(repr(k) for k in missing)}")
    page, raw_fields = data["page"], data["fields"]
    if not isinstance(page, str) or not page:
        raise BadInputError(f"{where}: 'page' must be a non-empty string")
    if not isinstance(raw_fields, list):
        raise BadInputError(f"{where}: 'fields' must be a list")
    fields = [_parse_field(f, f"{where}: field {i + 1}") for i, f in enumerate(raw_fields)]
    seen: set[str] = set()
    for f in fields:
        if f.name in seen:
            raise BadInputError(f"{where}: field name {f.name!r} appears twice")
        seen.add(f.name)
    path = _page_path(dataset_dir, page, where)
    width, height = _image_size(path, where)
    for f in fields:
        # A box beyond the image means the truth was made for another scale or another page.
        if f.box[2] > width or f.box[3] > height:
            raise BadInputError(
                f"{where}: field {f.name!r} box {list(f.box)} lies outside the "
                f"{width}x{height} image {page!r}"
            )
    return TruthPage(page=page, fields=fields)


def read_truth(dataset_dir: Path) -> list[TruthPage]:
    """Read and check `dataset_dir/truth.jsonl`; raise BadInputError naming file and line."""
    truth_path = dataset_dir / TRUTH_FILE
    if not truth_path.is_file():
        raise BadInputError(
            f"{dataset_dir} is not a ground-truth dataset: {TRUTH_FILE} not found "
            f"(expected {PAGES_DIR}/ with images and {TRUTH_FILE}, one line per page)"
        )
    try:
        # utf-8-sig: files saved by some Windows editors start with a byte-order mark.
        text = truth_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{truth_path}: not UTF-8 text: {e}") from e
    pages: list[TruthPage] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{truth_path}, line {lineno}"
        page = _parse_line(dataset_dir, line, where)
        if page.page in first_line:
            raise BadInputError(
                f"{where}: page {page.page!r} already listed on line {first_line[page.page]}"
            )
        first_line[page.page] = lineno
        pages.append(page)
    if not pages:
        raise BadInputError(f"{truth_path}: no pages listed")
    return pages


def _page_to_json(page: TruthPage) -> str:
    obj = {
        "page": page.page,
        "fields": [{"name": f.name, "box": list(f.box), "text": f.text} for f in page.fields],
    }
    return json.dumps(obj, ensure_ascii=False)


def write_truth(dataset_dir: Path, pages: list[TruthPage]) -> None:
    """Write `dataset_dir/truth.jsonl` for `pages` (the images are the caller's business)."""
    dataset_dir.mkdir(parents=True, exist_ok=True)
    target = dataset_dir / TRUTH_FILE
    tmp = dataset_dir / f".{TRUTH_FILE}.tmp"
    body = "".join(_page_to_json(p) + "\n" for p in pages)
    # Write then rename, so a reader never sees half a file.
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, target)


# ------------------------------------------------------------------------------------ SROIE


def _read_sroie_boxes(csv_path: Path) -> list[tuple[Box, str]]:
    try:
        # SROIE files mix LF and CRLF and some start with a UTF-8 byte-order mark.
        text = csv_path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise BadInputError(f"{csv_path}: not UTF-8 text: {e}") from e
    rows: list[tuple[Box, str]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{csv_path}, line {lineno}"
        # TEXT may itself contain commas: only the first eight are separators.
        parts = line.split(",", 8)
        if len(parts) != 9:
            raise BadInputError(f"{where}: expected x1,y1,x2,y2,x3,y3,x4,y4,TEXT")
        try:
            coords = [int(p.strip()) for p in parts[:8]]
        except ValueError as e:
            raise BadInputError(f"{where}: corner coordinates must be whole numbers") from e
        xs, ys = coords[0::2], coords[1::2]
        box = (min(xs), min(ys), max(xs), max(ys))
        if box[0] >= box[2] or box[1] >= box[3] or box[0] < 0 or box[1] < 0:
            raise BadInputError(f"{where}: the four corners {coords} enclose no area")
        text_value = parts[8].strip()
        if text_value:
            rows.append((box, text_value))
    return rows


# The receipt template's key fields (forms/templates/receipt.yaml) that SROIE's key files
# name. They live in keys.jsonl beside truth.jsonl: truth.jsonl holds the boxed lines the
# benchmarks match by box, and a key value has no box of its own in SROIE.
SROIE_KEY_FIELDS = ("company", "date", "total")
KEYS_FILE = "keys.jsonl"


def _sroie_keys(key_path: Path) -> dict[str, str]:
    """The receipt's key values (company, date, total) from SROIE's key file, if any."""
    if not key_path.is_file():
        return {}
    try:
        keys = json.loads(key_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInputError(f"{key_path}: not a usable SROIE key file: {e}") from e
    if not isinstance(keys, dict):
        raise BadInputError(f"{key_path}: not a usable SROIE key file: expected an object")
    return {
        k: str(keys[k])
        for k in SROIE_KEY_FIELDS
        if isinstance(keys.get(k), str) and keys[k].strip()
    }


def read_keys(dataset_dir: Path) -> dict[str, dict[str, str]]:
    """The key values of each page (`dataset_dir/keys.jsonl`; empty when there is none)."""
    path = dataset_dir / KEYS_FILE
    if not path.is_file():
        return {}
    out: dict[str, dict[str, str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out[str(row["page"])] = {str(k): str(v) for k, v in row["keys"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise BadInputError(
                f'{path}:{n}: expected {{"page": ..., "keys": {{...}}}}: {e}'
            ) from e
    return out


def with_keys(pages: list[TruthPage], keys: dict[str, dict[str, str]]) -> list[TruthPage]:
    """The truth pages with their key values as fields of those names, for scoring a
    template-free batch's key fields (matched by name: the box is a placeholder)."""
    return [
        TruthPage(
            p.page,
            [*p.fields, *(TruthField(k, (0, 0, 1, 1), v) for k, v in keys.get(p.page, {}).items())],
        )
        for p in pages
    ]


def sroie_to_dataset(sroie_dir: Path, out_dir: Path, names: list[str] | None = None) -> int:
    """Convert SROIE receipts (img/NNN.jpg, box/NNN.csv) to a dataset; return the page count.

    Each text line becomes a field `line_001`, `line_002`, ... in file order; the key
    values of key/NNN.json (company, date, total) go to keys.jsonl (see read_keys).
    """
    img_dir, box_dir = sroie_dir / "img", sroie_dir / "box"
    if not img_dir.is_dir() or not box_dir.is_dir():
        raise BadInputError(f"{sroie_dir} is not a SROIE folder: expected img/ and box/ in it")
    if names is None:
        names = sorted(p.stem for p in img_dir.glob("*.jpg"))
        if not names:
            raise BadInputError(f"{img_dir}: no .jpg receipts found")
    pages: list[TruthPage] = []
    keys: dict[str, dict[str, str]] = {}
    converted: list[tuple[Path, Path]] = []
    for name in names:
        image = img_dir / f"{name}.jpg"
        csv_path = box_dir / f"{name}.csv"
        if not image.is_file():
            raise BadInputError(f"SROIE receipt {name!r}: image {image} not found")
        if not csv_path.is_file():
            raise BadInputError(f"SROIE receipt {name!r}: line boxes {csv_path} not found")
        rows = _read_sroie_boxes(csv_path)
        fields = [
            TruthField(name=f"line_{i:03d}", box=box, text=text)
            for i, (box, text) in enumerate(rows, start=1)
        ]
        rel = f"{PAGES_DIR}/{name}.jpg"
        pages.append(TruthPage(page=rel, fields=fields))
        found = _sroie_keys(sroie_dir / "key" / f"{name}.json")
        if found:
            keys[rel] = found
        converted.append((image, out_dir / rel))
    # Parse everything before copying anything, so a bad file leaves no half-made dataset.
    (out_dir / PAGES_DIR).mkdir(parents=True, exist_ok=True)
    for src, dst in converted:
        shutil.copyfile(src, dst)
    write_truth(out_dir, pages)
    if keys:
        body = "".join(json.dumps({"page": p, "keys": k}) + "\n" for p, k in keys.items())
        (out_dir / KEYS_FILE).write_text(body, encoding="utf-8")
    return len(pages)
