"""`extends` is resolved by file and iteratively: a file that comes back under another
method name is a cycle (E0204), a chain beyond MAX_EXTENDS ancestors is E0213, and a
parent the OS cannot find or read is E0203 at the child's `extends` (issue 9, item 2)."""
import pytest

import ptdsl
from ptdsl.syntax.resolve import MAX_EXTENDS


def _write(tmp_path, text, name):
    f = tmp_path / name
    f.write_text(text)
    return str(f)


def test_file_that_extends_itself_under_another_name(tmp_path):
    path = _write(tmp_path, "method b extends a\n", "a.ptdsl")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.compile(path)
    (d,) = info.value.diagnostics
    assert d.code == "E0204" and "a.ptdsl" in d.notes[0]


def _chain(tmp_path, n):
    """m0 extends m1 extends … m{n-1}, which extends the library's sft: n files, n + 1 ancestors of m0… """
    for i in range(n):
        parent = f"m{i + 1}" if i + 1 < n else "sft"
        (tmp_path / f"m{i}.ptdsl").write_text(f"method m{i} extends {parent}\nparam p{i} = {i}\n")
    return str(tmp_path / "m0.ptdsl")


def test_extends_chain_at_the_limit(tmp_path):
    m = ptdsl.load(_chain(tmp_path, MAX_EXTENDS))  # MAX_EXTENDS − 1 files above m0, then sft
    assert m.params["p0"].default == 0 and len(m.definition.sources) == MAX_EXTENDS + 1


def test_extends_chain_beyond_the_limit(tmp_path):
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(_chain(tmp_path, MAX_EXTENDS + 1))
    assert [d.code for d in info.value.diagnostics] == ["E0213"]


def test_thousand_file_chain(tmp_path):
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(_chain(tmp_path, 1000))
    assert [d.code for d in info.value.diagnostics] == ["E0213"]


def test_parent_name_too_long_for_the_file_system(tmp_path):
    path = _write(tmp_path, "method t extends " + "x" * 300 + "\n", "t.ptdsl")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(path)
    (d,) = info.value.diagnostics
    assert d.code == "E0203" and d.span.line == 1


def test_unreadable_parent_is_reported_at_extends(tmp_path):
    (tmp_path / "p.ptdsl").write_bytes(b"method p \xff\xfe\n")
    path = _write(tmp_path, "method c extends p\n", "c.ptdsl")
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(path)
    (d,) = info.value.diagnostics
    assert d.code == "E0203" and d.span.file == path and "cannot read" in d.message


@pytest.mark.parametrize("target", ["x" * 5000 + ".ptdsl", "a\x00b.ptdsl", "x" * 5000])
def test_paths_the_os_rejects(target):
    with pytest.raises(ptdsl.SpecError) as info:
        ptdsl.load(target)
    assert info.value.diagnostics[0].code == "E0203"
