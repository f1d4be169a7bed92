"""Legal holds: an active hold refuses erasure (recorded); the reason may not quote the person."""

from __future__ import annotations

import _privacy_db
import pytest
from _privacy_db import busy_user, dump, found_in, person, rows

from agentdb.errors import ErasureRefused, HoldReasonRejected, NoActiveHold, UnknownUser
from agentdb.privacy import erase_user, place_hold, privacy_requests, release_hold

#: Fixtures: a fresh copy of a database seeded once per session (see _privacy_db).
seeded_template = _privacy_db.seeded_template
seeded_url = _privacy_db.seeded_url


def test_a_hold_refuses_erasure_records_the_refusal_and_changes_nothing(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user)
    hold = place_hold(user, "litigation case 2026-114", database_url=seeded_url)
    def data() -> str:  # all but where a refusal is recorded: the ledger, event_logs (and its identity)
        text = dump(seeded_url, "--exclude-schema=agentdb", "--exclude-table-data=event_logs")
        return "\n".join(line for line in text.splitlines() if "event_logs_id_seq" not in line)

    before = data()

    with pytest.raises(ErasureRefused, match=f"legal hold \\(request {hold.request_id}\\)") as refused:
        erase_user(user, database_url=seeded_url)

    assert data() == before
    assert found_in(str(refused.value), who) == []
    erasure = privacy_requests(database_url=seeded_url, kind="erasure")[0]
    assert (erasure.status, erasure.hold_id, erasure.id) == ("refused", hold.request_id, refused.value.request_id)
    assert erasure.completed_at is not None
    assert rows(seeded_url, "SELECT details FROM event_logs WHERE event_type = 'privacy.erasure_refused'") == [
        ({"request": erasure.id, "hold": hold.request_id},)]
    assert erase_user(user, database_url=seeded_url, dry_run=True).status == "refused"

    released = release_hold(user, database_url=seeded_url)
    assert (released.request_id, released.status) == (hold.request_id, "released")
    assert erase_user(user, database_url=seeded_url).status == "done"
    assert found_in(dump(seeded_url), who) == []


def test_holding_twice_keeps_one_hold_and_releasing_without_one_is_an_error(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    first = place_hold(user, "case 17", database_url=seeded_url)
    second = place_hold(user, "case 18", database_url=seeded_url)
    assert (second.request_id, second.changed, first.changed) == (first.request_id, False, True)
    release_hold(user, database_url=seeded_url)
    with pytest.raises(NoActiveHold):
        release_hold(user, database_url=seeded_url)
    with pytest.raises(UnknownUser):
        place_hold(987654, "case 19", database_url=seeded_url)


def test_a_reason_that_quotes_the_person_or_is_not_a_plain_reference_is_rejected(seeded_url: str) -> None:
    user = busy_user(seeded_url)
    who = person(seeded_url, user)
    for reason in ("{email} asked us to keep it", "{name}: pending lawsuit", "  ", "x" * 201, "case\x07 12"):
        text = reason.format(email=who.email.upper(), name=who.names[0])
        with pytest.raises(HoldReasonRejected) as rejected:
            place_hold(user, text, database_url=seeded_url)
        assert found_in(str(rejected.value), who) == []
    assert privacy_requests(database_url=seeded_url) == []
    assert place_hold(user, "case 2026-114", database_url=seeded_url).changed
