"""One reader for record files: JSONL, a JSON list, CSV or TSV. One error type, one message style.

    from bengali_empathy.io import read_records
    table = read_records("prompts.jsonl", what="prompt file", fix="write one JSON object per line")
    for rec in table.records:      # rec.where: "line 3" (JSONL, CSV) or "item 2" (JSON list)
        rec.value                  # the record: a dict (CSV, and JSON objects) or any JSON value
    table.fields                   # column names (CSV header, or the keys of the JSON objects in order)

Every problem is a DataError whose message names the file, the line (or item) and the fix:
`prompts.jsonl line 2: not valid JSON (Expecting value); write one JSON object per line`. Bytes that are
not UTF-8 are reported with their line too. The format follows the file name: .csv and .tsv are tables,
anything else is JSON, either a list (or {"<list_key>": [...]}) or one object per line (JSONL).
No project imports but errors: data, generate and score all read through here.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DataError

UTF8_FIX = "re-save the file as UTF-8 (Excel: 'CSV UTF-8 (Comma delimited)'; or `iconv -f cp1252 -t utf-8`)"
# Long counselor answers can exceed the csv module's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Record:
    where: str  # "line N" (the line the record starts on) or "item N" (1-based place in a JSON list)
    value: Any


@dataclass
class RecordFile:
    path: Path
    records: list[Record] = field(default_factory=list)
    fields: list[str] = field(default_factory=list)


def problem(path: Path | str, where: str | None, what: str, fix: str = "") -> DataError:
    """The one message style: '<file>[ <where>]: <what>[; <fix>]'."""
    return DataError(f"{path}{' ' + where if where else ''}: {what}{'; ' + fix if fix else ''}")


def read_text(path: Path | str, what: str = "file", fix: str = "") -> str:
    """The whole file as text (UTF-8, a byte-order mark dropped); a missing file or a non-UTF-8 byte is a
    DataError that names the file, the line and the fix."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p} is a folder, not a {what}" + (f"; {fix}" if fix else ""))
    if not p.is_file():
        raise DataError(f"{what} not found: {p}" + (f"; {fix}" if fix else ""))
    raw = p.read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise problem(p, f"line {line}", f"byte 0x{raw[e.start]:02x} at column {column} is not UTF-8 text",
                      UTF8_FIX) from None


def read_records(path: Path | str, what: str = "file", fix: str = "", objects: bool = True,
                 list_key: str | None = None, allow_empty: bool = False) -> RecordFile:
    """Records of a JSONL, JSON-list, CSV or TSV file (see the module docstring).

    objects: every record must be a JSON object (CSV rows always are). list_key: a JSON file may also be
    {"<list_key>": [...]}. An empty file is an error unless allow_empty; a CSV with only its header
    gives no records.
    """
    p = Path(path)
    text = read_text(p, what, fix)
    if not text.strip():
        if allow_empty:
            return RecordFile(p)
        raise problem(p, None, "the file is empty", fix)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".tsv"):
        out = _read_table(p, text, "\t" if suffix == ".tsv" else ",", fix)
    else:
        out = _read_json(p, text, fix, list_key)
        if objects:
            for r in out.records:
                if not isinstance(r.value, dict):
                    raise problem(p, r.where, f"expected a JSON object, got {type(r.value).__name__}", fix)
        out.fields = list(dict.fromkeys(k for r in out.records if isinstance(r.value, dict) for k in r.value))
    return out


def _read_json(p: Path, text: str, fix: str, list_key: str | None) -> RecordFile:
    stripped = text.lstrip()
    if stripped[0] in "[{":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if stripped[0] == "[":
                raise problem(p, f"line {e.lineno}", f"not valid JSON ({e.msg})", fix) from None
            data = None  # "{...}\n{...}": JSONL, read line by line below
        if isinstance(data, dict) and list_key and isinstance(data.get(list_key), list):
            data = data[list_key]
        if isinstance(data, list):
            return RecordFile(p, [Record(f"item {i}", x) for i, x in enumerate(data, 1)])
        if data is not None and not isinstance(data, dict):
            raise problem(p, None, f"expected a JSON list of records, got {type(data).__name__}", fix)
        # A single object on one line is a JSONL file of one record.
    records = []
    # split("\n"), not splitlines(): U+2028 and friends may stand unescaped inside JSON strings.
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append(Record(f"line {n}", json.loads(line)))
        except json.JSONDecodeError as e:
            raise problem(p, f"line {n}", f"not valid JSON ({e.msg})", fix) from None
    return RecordFile(p, records)


def _read_table(p: Path, text: str, delimiter: str, fix: str) -> RecordFile:
    name = "tab" if delimiter == "\t" else "comma"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    records = []
    last = 0  # the source line the previous row ended on
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row:
                continue  # a blank line
            if header is None:
                header = row
                continue
            if len(row) > len(header):
                raise problem(p, f"line {start}", f"{len(row)} fields but the header has {len(header)}",
                              f"put fields that contain a {name} in double quotes")
            row = row + [""] * (len(header) - len(row))
            records.append(Record(f"line {start}", dict(zip(header, row))))
    except csv.Error as e:
        raise problem(p, f"line {reader.line_num}", f"cannot parse the {name}-separated table ({e})",
                      "check the quotes on that line") from None
    return RecordFile(p, records, list(header or []))

