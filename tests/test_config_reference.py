"""docs/configuration.md is generated from the config files, the domain schema and the value
checks (scripts/config_reference.py): regenerated here, it must be the committed page byte for byte."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_the_configuration_reference_is_regenerated_byte_for_byte(tmp_path):
    out = tmp_path / "configuration.md"
    subprocess.run([sys.executable, str(REPO / "scripts" / "config_reference.py"), "--out", str(out)], check=True,
                   capture_output=True)
    assert out.read_text() == (REPO / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md is stale: run python scripts/config_reference.py")


def test_every_config_file_and_checked_key_is_on_the_page():
    page = (REPO / "docs" / "configuration.md").read_text()
    conf = REPO / "crossrec_cli" / "conf"
    for path in conf.glob("*/*.yaml"):
        if path.parent.name != "domain" or path.stem in ("movies", "music"):
            assert f"#### {path.parent.name}={path.stem}" in page, path
    from crossrec_cli.config_check import CHECKS

    assert all(f"| `{key}` |" in page for key in CHECKS)
