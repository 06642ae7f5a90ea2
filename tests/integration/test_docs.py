"""The docs that are generated from code must match the code."""
import os
import subprocess

from conftest import ROOT, SORI_BIN


def test_operations_flag_table_matches_config_table():
    """docs/OPERATIONS.md's flag table is `sori config-doc` verbatim."""
    table = subprocess.run([SORI_BIN, "config-doc"], capture_output=True, text=True, check=True).stdout
    with open(os.path.join(ROOT, "docs", "OPERATIONS.md")) as f:
        doc = f.read()
    begin, end = "<!-- flags:begin -->\n", "<!-- flags:end -->"
    assert begin in doc and end in doc
    section = doc.split(begin, 1)[1].split(end, 1)[0]
    assert section == table, "regenerate the table in docs/OPERATIONS.md with `build/sori config-doc`"


def test_readme_opens_with_the_two_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        head = f.read(1500)
    assert "make run" in head and "make test" in head
