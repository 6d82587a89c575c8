"""docs/configuration.md is the reference generated from ``Settings``: it must match the code."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from qwen_gateway.__main__ import main
from qwen_gateway.config import Settings
from qwen_gateway.config_reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_the_committed_reference_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is out of date: run `qwen-gateway config-reference`"
    )


def test_every_setting_has_a_row_with_a_description() -> None:
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[4].strip()
        for line in render().splitlines()
        if line.startswith("| `")
    }
    envs = [f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata.get("env")]
    assert sorted(rows) == sorted(envs)
    assert [env for env, doc in rows.items() if not doc] == []


def test_a_new_field_appears_with_its_comment_and_secrets_keep_their_default_hidden() -> None:
    @dataclass(frozen=True, kw_only=True)
    class Extended(Settings):
        # --- added by another branch ---
        #: a setting nobody documented elsewhere
        new_limit: int = field(default=7, metadata={"env": "QG_NEW_LIMIT"})
        new_token: str = field(
            default="s3cret", metadata={"env": "QG_NEW_TOKEN", "secret": True, "doc": "from doc"}
        )

    text = render(Extended)
    assert "## Added by another branch" in text
    assert "| `QG_NEW_LIMIT` | int | `7` | a setting nobody documented elsewhere |" in text
    assert "| `QG_NEW_TOKEN` | text | (secret) | from doc |" in text
    assert "s3cret" not in text


def test_check_mode_fails_on_a_stale_file(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    assert main(["config-reference", "--out", str(out), "--check"]) == 1
    assert main(["config-reference", "--out", str(out)]) == 0
    assert main(["config-reference", "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "edited\n")
    assert main(["config-reference", "--out", str(out), "--check"]) == 1
