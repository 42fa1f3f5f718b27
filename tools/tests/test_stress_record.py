"""docs/reliability.md records 100 runs of each stress case (the example under each launcher
exiting 0; a failing worker ending the run with exit 1 and its rank named), every one as expected,
measured on the launch code that is in the repository now: changing that code without running
``tools/dev.py stress`` again fails here."""

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


#: A row of the record's table: case, expected, runs, as expected, other outcomes, processes left.
ROW = re.compile(r"^\| `([\w-]+)` \| ([^|]+) \| (\d+) \| (\d+) \| ([^|]+) \| (\d+) \|", re.M)


def test_every_case_ran_100_times_as_expected() -> None:
    rows = ROW.findall(record())
    assert {case for case, *_ in rows} >= set(stress.DEFAULT_CASES), "a case was not measured"
    for case, expected, runs, as_expected, others, left in rows:
        assert expected.strip() == stress.CASES[case].expected, case
        assert int(runs) >= 100, case
        assert int(as_expected) == int(runs), f"{case}: {others.strip()}"
        assert int(left) == 0, case


def test_the_record_table_is_what_the_test_reads() -> None:
    """The test above reads the table that stress.table writes (so it cannot pass by reading
    nothing), and an unexpected outcome shows in it."""
    ok = stress.Outcome(code=1, seconds=2.0, left_behind=0, tail="", said=True)
    unnamed = stress.Outcome(code=1, seconds=3.0, left_behind=0, tail="", said=False)
    aborted = stress.Outcome(code=134, seconds=4.0, left_behind=1, tail="")
    text = stress.table({"ddp-worker-killed": [ok, unnamed, aborted]})
    rows = ROW.findall(text)
    assert rows == [
        (
            "ddp-worker-killed",
            "exit 1, rank 1 named",
            "3",
            "1",
            "exit 1 without naming the rank: 1, exit 134: 1",
            "1",
        )
    ]


def test_a_fault_case_must_name_the_rank() -> None:
    case = stress.CASES["ddp-worker-killed"]
    assert case.says is not None
    line = "fab: the run failed: rank 1 (pid 4242) was killed by SIGKILL; stopping the other ranks"
    assert re.search(case.says, f"[rank0]: RuntimeError: Connection reset by peer\n{line}\n")
    assert not re.search(case.says, "[rank0]: RuntimeError: Connection reset by peer\n")


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
