"""The one record reader (bengali_empathy/io.py): formats, line numbers, and messages that name the file,
the line and the fix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bengali_empathy.config import REPO_ROOT
from bengali_empathy.errors import DataError, UserError
from bengali_empathy.io import read_records


def test_jsonl_json_list_and_keyed_list_give_the_same_records(tmp_path):
    rows = [{"prompt": "ভয় লাগে", "category": "Stress"}, {"prompt": "একা\u2028লাগে"}]  # U+2028 inside a string
    jl = tmp_path / "p.jsonl"
    jl.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n", encoding="utf-8")
    lst = tmp_path / "p.json"
    lst.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    keyed = tmp_path / "k.json"
    keyed.write_text(json.dumps({"prompts": rows}, ensure_ascii=False), encoding="utf-8")
    a, b, c = read_records(jl), read_records(lst), read_records(keyed, list_key="prompts")
    assert [r.value for r in a.records] == [r.value for r in b.records] == [r.value for r in c.records] == rows
    assert [r.where for r in a.records] == ["line 1", "line 2"]
    assert [r.where for r in b.records] == ["item 1", "item 2"]
    assert a.fields == ["prompt", "category"]


def test_csv_multiline_field_keeps_line_numbers_and_bom_is_dropped(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes("\ufeffprompt,response\r\n\"দুই\nলাইন\",উত্তর\r\nতিন,চার\r\nশুধু\r\n".encode("utf-8"))
    t = read_records(f)
    assert t.fields == ["prompt", "response"]  # no BOM glued to the first name
    assert [r.where for r in t.records] == ["line 2", "line 4", "line 5"]
    assert t.records[0].value == {"prompt": "দুই\nলাইন", "response": "উত্তর"}
    assert t.records[2].value == {"prompt": "শুধু", "response": ""}  # a short row is filled, as pandas did
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\nx, y\tz\n", encoding="utf-8")
    assert read_records(tsv).records[0].value == {"a": "x, y", "b": "z"}


@pytest.mark.parametrize("name, content, needles", [
    ("bad.jsonl", b'{"prompt": "a"}\n{"prompt": oops}\n', ["bad.jsonl line 2: not valid JSON", "; fix it"]),
    ("bad.json", b'[{"prompt": "a"},\n {"prompt": }]', ["bad.json line 2: not valid JSON"]),
    ("latin.csv", b"prompt,response\nok,fine\nfa\xe7ade,x\n", ["latin.csv line 3: byte 0xe7 at column 3", "UTF-8"]),
    ("latin.jsonl", b'{"a": "b"}\n\n{"a": "\xff"}\n', ["latin.jsonl line 3: byte 0xff", "re-save the file as UTF-8"]),
    ("wide.csv", b"prompt,response\na,b\na,b,c\n", ["wide.csv line 3: 3 fields but the header has 2", "double quotes"]),
    ("empty.jsonl", b"  \n\n", ["empty.jsonl: the file is empty; fix it"]),
    ("scalars.jsonl", b'{"a": 1}\n"text"\n', ["scalars.jsonl line 2: expected a JSON object, got str"]),
])
def test_errors_name_the_file_the_line_and_the_fix(tmp_path, name, content, needles):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(DataError) as e:
        read_records(f, "test file", "fix it")
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, UserError)
    for needle in needles:
        assert needle in msg, msg


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="prompt file not found: .*nope.jsonl; pass --prompts"):
        read_records(tmp_path / "nope.jsonl", "prompt file", "pass --prompts FILE")
    with pytest.raises(DataError, match="is a folder, not a prompt file"):
        read_records(tmp_path, "prompt file")
    empty = tmp_path / "e.jsonl"
    empty.write_text("", encoding="utf-8")
    assert read_records(empty, allow_empty=True).records == []


def test_cli_error_handling_imports_no_model_code():
    """The scripts' error registry lives at the bottom of the package: no torch to print a flag error."""
    code = ("import sys, bengali_empathy.cli; "
            "print(sorted(m for m in ('torch', 'transformers', 'pandas', 'bengali_empathy.model') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_old_import_locations_are_the_same_types():
    from bengali_empathy import cli, config, data, errors, model

    assert (config.ConfigError, data.DataError, model.ModelError) == (errors.ConfigError, errors.DataError,
                                                                     errors.ModelError)
    assert all(issubclass(e, cli.USER_ERRORS) for e in (errors.ConfigError, errors.DataError, errors.ModelError))
