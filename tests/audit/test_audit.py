from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from appliance.audit import Action, AuditEvent, AuditTrail, EventID, Outcome
from appliance.cli import main
from appliance.store import Store


def _trail(tmp_path: Path, n: int = 6) -> AuditTrail:
    store = Store(tmp_path / "appliance.db")
    trail = AuditTrail(store, tmp_path / "audit.head")
    for i in range(n):
        trail.log(
            AuditEvent(
                event_id=EventID.INSTANCES_TRANSFERRED,
                action=Action.CREATE,
                user_id=f"ae:CAM{i}",
                patient_id=f"P{i}",
                study_instance_uid=f"1.2.3.{i}",
                sop_instance_uids=[f"1.2.3.{i}.1"],
                detail={"capture_id": i},
            )
        )
    return trail


def _tamper(tmp_path: Path, *statements: str) -> None:
    """What someone with file access could do: drop the guards and edit rows."""
    conn = sqlite3.connect(tmp_path / "appliance.db")
    conn.execute("DROP TRIGGER audit_events_no_update")
    conn.execute("DROP TRIGGER audit_events_no_delete")
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()


def test_intact_chain_verifies(tmp_path: Path) -> None:
    result = _trail(tmp_path).verify()
    assert result.ok and result.checked == 6


def test_rows_cannot_be_updated_or_deleted(tmp_path: Path) -> None:
    trail = _trail(tmp_path, 2)
    for sql in ("UPDATE audit_events SET user_id = 'x'", "DELETE FROM audit_events"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"), trail.store.write() as tx:
            tx.execute(sql)
    assert trail.verify().ok


@pytest.mark.parametrize(
    ("statements", "bad_seq", "words"),
    [
        (
            ["UPDATE audit_events SET detail = replace(detail, '3', '4') WHERE seq = 4"],
            4,
            "altered",
        ),
        (["UPDATE audit_events SET outcome = 4 WHERE seq = 2"], 2, "altered"),
        (["DELETE FROM audit_events WHERE seq = 3"], 3, "missing"),
        (
            [
                "UPDATE audit_events SET seq = 100 WHERE seq = 2",
                "UPDATE audit_events SET seq = 2 WHERE seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE seq = 100",
            ],
            2,
            "",
        ),
        (["DELETE FROM audit_events WHERE seq >= 5"], 5, "truncated"),
    ],
    ids=["flip-detail", "flip-outcome", "delete", "reorder", "truncate"],
)
def test_tampering_names_the_first_bad_entry(
    tmp_path: Path, statements: list[str], bad_seq: int, words: str
) -> None:
    trail = _trail(tmp_path)
    _tamper(tmp_path, *statements)
    result = trail.verify()
    assert not result.ok
    assert result.first_bad_seq == bad_seq
    assert words in result.problem


def test_cli_verify_exit_codes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _trail(tmp_path)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    assert main(["audit", "verify"]) == 0
    assert "6 entries verified" in capsys.readouterr().out
    _tamper(tmp_path, "UPDATE audit_events SET user_id = 'someone-else' WHERE seq = 2")
    assert main(["audit", "verify"]) == 1
    assert "entry 2" in capsys.readouterr().err


def test_export_jsonl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _trail(tmp_path, 3)
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", "--format", "jsonl", "--out", str(out)]) == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert records[0]["event_name"] == "DICOM Instances Transferred"
    assert records[1]["prev_hash"] == records[0]["hash"]
    assert records[2]["sop_instance_uids"] == ["1.2.3.2.1"]
    assert records[0]["outcome"] == Outcome.SUCCESS


def test_audit_row_commits_with_the_change_or_not_at_all(tmp_path: Path) -> None:
    trail = _trail(tmp_path, 1)
    with pytest.raises(RuntimeError), trail.store.write() as tx:
        tx.insert("patients", {"patient_id": "X", "created_at": "now"})
        trail.record(tx, AuditEvent(event_id=EventID.IMPORT, action=Action.CREATE, user_id="u"))
        raise RuntimeError("crash before commit")
    assert trail.store.scalar("SELECT count(*) FROM audit_events") == 1
    assert trail.store.scalar("SELECT count(*) FROM patients") == 0
    assert trail.verify().ok


def test_replacing_the_tail_with_a_forged_chain_is_caught(tmp_path: Path) -> None:
    trail = _trail(tmp_path, 4)
    _tamper(tmp_path, "DELETE FROM audit_events WHERE seq >= 3")
    forger = AuditTrail(trail.store, tmp_path / "unused.head")  # the genuine head stays put
    for _ in range(2):
        forger.log(AuditEvent(event_id=EventID.IMPORT, action=Action.CREATE, user_id="forger"))
    result = trail.verify()
    assert not result.ok and result.first_bad_seq == 4 and "replaced" in result.problem
