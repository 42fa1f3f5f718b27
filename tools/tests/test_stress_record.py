"""docs/reliability.md records 100 clean runs of each launcher, measured on the launch code that is
in the repository now: changing that code without running ``tools/dev.py stress`` again fails
here."""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/ is not a package
import stress


def record() -> str:
    text = stress.RECORD.read_text(encoding="utf-8")
    return text[text.index(stress.BEGIN) : text.index(stress.END)]


def test_the_record_was_measured_on_the_current_launch_code() -> None:
    found = re.search(r"Launch code fingerprint: `([0-9a-f]+)`", record())
    assert found is not None, "docs/reliability.md has no measurement: run tools/dev.py stress"
    assert found.group(1) == stress.launch_code_fingerprint(), (
        "the launch code changed since docs/reliability.md was measured: run "
        "`python tools/dev.py stress` and commit the new record"
    )


def test_every_launcher_ran_100_times_cleanly() -> None:
    rows = re.findall(r"^\| `([\w-]+)` \| (\d+) \| (\d+) \| (\w+) \| (\d+) \|", record(), re.M)
    assert {launcher for launcher, *_ in rows} >= {"ddp", "fab-run"}
    for launcher, runs, clean, others, left in rows:
        assert int(runs) >= 100, launcher
        assert int(clean) == int(runs), f"{launcher}: {others}"
        assert int(left) == 0, launcher


def test_the_fingerprint_follows_the_code(tmp_path: Path) -> None:
    for entry in stress.LAUNCH_CODE:
        source = stress.ROOT / entry
        target = tmp_path / entry
        if source.is_dir():
            for file in source.rglob("*.py"):
                destination = target / file.relative_to(source)
                destination.parent.mkdir(parents=True, exist_ok=True)
                destination.write_bytes(file.read_bytes())
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    before = stress.launch_code_fingerprint(tmp_path)
    assert before == stress.launch_code_fingerprint()
    launcher = tmp_path / stress.LAUNCH_CODE[0] / "subprocess_script.py"
    launcher.write_text(launcher.read_text() + "\n# changed\n")
    assert stress.launch_code_fingerprint(tmp_path) != before
