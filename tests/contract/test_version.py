"""Versioning (issue 13 item 6): `ptdsl.__version__` is the single source; `ptdsl --version`,
the built package's metadata and the newest release in CHANGELOG.md agree with it, and
CHANGELOG.md keeps the Keep a Changelog layout the contract tests read."""
import contextlib
import io
import re
import subprocess
import sys
import tomllib
import zipfile

import pytest

import ptdsl
from tests.contract import changelog as CL

ROOT = CL.ROOT


def test_version_is_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", ptdsl.__version__), ptdsl.__version__


def test_cli_version_prints_the_package_version():
    from ptdsl.cli.main import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert out.getvalue().strip() == f"ptdsl {ptdsl.__version__}"


def test_pyproject_reads_the_version_from_the_package():
    """No second copy of the number: the build backend reads ptdsl/version.py."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in meta["project"] and "version" in meta["project"]["dynamic"]
    assert meta["build-system"]["build-backend"] == "hatchling.build"
    assert meta["tool"]["hatch"]["version"]["path"] == "ptdsl/version.py"


def test_wheel_metadata_carries_the_version(tmp_path):
    """The built wheel's metadata, not the venv's installed copy (an editable install of
    another checkout)."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path)], check=True, timeout=300)
    (wheel,) = tmp_path.glob("ptdsl-*.whl")
    meta = zipfile.ZipFile(wheel).read(f"ptdsl-{ptdsl.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {ptdsl.__version__}\n" in meta


def test_newest_changelog_release_is_the_package_version():
    newest = CL.newest_release()
    assert newest.name == ptdsl.__version__, (
        f"CHANGELOG.md's newest release is {newest.name}, ptdsl.__version__ is {ptdsl.__version__}: "
        "a release moves the [Unreleased] lines under a new `## [X.Y.Z] - DATE` heading and sets __version__")


def test_changelog_follows_keep_a_changelog():
    sections, links = CL.parse()
    assert sections and sections[0].name == "Unreleased", "the first section is `## [Unreleased]`"
    released = CL.releases(sections)
    for s in released:
        assert CL.VERSION.match(s.name), f"line {s.line}: `{s.name}` is not X.Y.Z"
        assert s.date and re.fullmatch(r"\d{4}-\d{2}-\d{2}", s.date), f"line {s.line}: `{s.name}` needs ` - YYYY-MM-DD`"
    versions = [CL.key(s.name) for s in released]
    assert versions == sorted(versions, reverse=True) and len(set(versions)) == len(versions), \
        "releases in descending version order, each once"
    dates = [s.date for s in released]
    assert dates == sorted(dates, reverse=True), "release dates descend with the versions"
    for s in sections:
        unknown = set(s.subsections) - set(CL.KINDS)
        assert not unknown, f"`{s.name}` has subsections outside Keep a Changelog's: {sorted(unknown)}"
        assert s.name in links, f"no link reference `[{s.name}]: URL` at the bottom for `{s.name}`"
    text = CL.PATH.read_text().rstrip().splitlines()
    assert CL.LINK.match(text[-1]), "the link references come last"


def test_changelog_parser_sees_breaking_versions():
    """0.x: the minor is the major; a patch release is not breaking (a synthetic changelog)."""
    text = ("## [Unreleased]\n## [1.0.0] - 2027-03-01\n## [0.3.1] - 2027-02-01\n## [0.3.0] - 2027-01-01\n"
            "### Changed\n- `dpo` loss\n## [0.2.0] - 2026-12-06\n")
    sections, _ = CL.parse(text)
    assert [CL.is_breaking(v, sections) for v in ("1.0.0", "0.3.1", "0.3.0", "0.2.0")] == [True, False, True, True]
    assert CL.mentions(CL.section("0.3.0", sections).subsections["Changed"], "dpo")
    assert not CL.mentions("- `cdpo` loss", "dpo") and not CL.mentions("- ipo_dpo", "dpo")
