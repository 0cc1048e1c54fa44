"""Reading dataset files (runtime/datafiles.py): rows exactly as the file holds them,
each with its line, and a bad file one clear error naming the file and the lines."""
import json

import pytest

from ptdsl.runtime.datafiles import read_table
from ptdsl.runtime.errors import RuntimeSetupError


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return str(path)


def test_jsonl_rows_keep_their_own_keys_types_and_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"prompt": "a", "chosen": 2}\n\n{"prompt": "b", "rejected": [1]}\n', encoding="utf-8")
    t = read_table(str(p))
    # no key filled with None, no type unified across rows; the blank line is no row
    assert t.rows == [{"prompt": "a", "chosen": 2}, {"prompt": "b", "rejected": [1]}]
    assert t.lines == [1, 3] and t.where(1) == "row 2 (line 3)" and not t.textual


def test_json_array_columns_and_json_lines_in_a_json_file(tmp_path):
    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    a.write_text('[{"prompt": "x", "completion": "y"}]', encoding="utf-8")
    b.write_text('{"prompt": ["x", "z"], "completion": ["y", "w"]}', encoding="utf-8")
    c.write_text('{"prompt": "x"}\n{"prompt": "z"}\n', encoding="utf-8")
    assert read_table(str(a)).rows == [{"prompt": "x", "completion": "y"}]
    assert read_table(str(b)).rows == [{"prompt": "x", "completion": "y"}, {"prompt": "z", "completion": "w"}]
    assert read_table(str(c)).rows == [{"prompt": "x"}, {"prompt": "z"}]
    assert read_table(str(a)).where(0) == "row 1"  # no lines for a JSON array: rows from 1


def test_csv_cells_stay_text_and_a_blank_cell_is_missing(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('prompt,chosen,label\n1+1=,2,true\n"a, ""quoted""\nline",,0\n', encoding="utf-8")
    t = read_table(str(p))
    # `2` stays "2" (datasets makes the column float: "2.0"); the blank cell is None, not "None"
    assert t.rows == [{"prompt": "1+1=", "chosen": "2", "label": "true"},
                      {"prompt": 'a, "quoted"\nline', "chosen": None, "label": "0"}]
    assert t.lines == [2, 3] and t.textual


def test_a_file_that_is_not_utf8_names_the_file_line_and_byte(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes(b'{"prompt": "a"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(RuntimeSetupError, match=r"latin1.jsonl` is not UTF-8 text: byte 0xe9 at line 2, "
                                                r"column 16") as e:
        read_table(str(p))
    assert "iconv" in e.value.help


def test_a_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffprompt,completion\na,b\n".encode())
    assert read_table(str(p)).rows == [{"prompt": "a", "completion": "b"}]


def test_lines_that_are_not_json_objects_are_all_counted(tmp_path):
    p = tmp_path / "bad.jsonl"
    lines = ['{"prompt": "a"}', '{"prompt": ', "[1, 2]"] + ["nope"] * 7
    p.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(RuntimeSetupError) as e:
        read_table(str(p))
    msg = str(e.value)
    assert "bad.jsonl`: 9 lines are not JSON objects" in msg
    assert "line 2, column 12: Expecting value" in msg and "line 3: a JSON array, not an object" in msg
    assert "… and 4 more" in msg  # the first five named, the rest counted


def test_truncated_json_and_a_json_scalar(tmp_path):
    p, q = tmp_path / "t.json", tmp_path / "s.json"
    p.write_text('[{"prompt": "a"},\n {"prompt": ', encoding="utf-8")
    q.write_text('"just a string"', encoding="utf-8")
    with pytest.raises(RuntimeSetupError, match=r"t.json` is not valid JSON: line 2, column 13"):
        read_table(str(p))
    with pytest.raises(RuntimeSetupError, match=r"s.json` holds a JSON string; a dataset is a list"):
        read_table(str(q))


def test_ragged_csv_rows_name_their_lines(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("prompt,chosen,rejected\na,b,c\nd,e\nf,g,h,i\n", encoding="utf-8")
    with pytest.raises(RuntimeSetupError) as e:
        read_table(str(p))
    assert "r.csv`: 2 lines have another number of cells than the header" in str(e.value)
    assert "line 3: 2 cells, the header has 3" in str(e.value) and "line 4: 4 cells" in str(e.value)


def test_csv_header_naming_a_column_twice(tmp_path):
    p = tmp_path / "h.csv"
    p.write_text("prompt,prompt\na,b\n", encoding="utf-8")
    with pytest.raises(RuntimeSetupError, match="names a column twice"):
        read_table(str(p))


def test_parquet_keeps_types_and_nulls(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": ["x", None], "label": [True, False]}), p)
    assert read_table(str(p)).rows == [{"prompt": "a", "chosen": "x", "label": True},
                                       {"prompt": "b", "chosen": None, "label": False}]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    with pytest.raises(RuntimeSetupError, match="bad.parquet` is not a readable Parquet file"):
        read_table(str(bad))


def test_unknown_extension_and_unreachable_source(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("x", encoding="utf-8")
    with pytest.raises(RuntimeSetupError, match="use .json, .jsonl, .parquet or .csv"):
        read_table(str(p))
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(RuntimeSetupError, match="cannot load dataset"):
        read_table(str(tmp_path / "empty-dir"))  # exists, but no data in it: datasets' own error, named
    with pytest.raises(RuntimeSetupError, match="no such file"):
        read_table(str(tmp_path / "no-such-dir" / "x"))  # a local path: never asked of the Hub
