"""The example plugins (`plugins/python/`) and the hostile fixtures (`tests/fixtures/python/`),
run natively from their files."""

from __future__ import annotations

import logging

import pytest

from evhost import Failure, NewEvent, Rejected, ScheduleTimer, send, testing

from conftest import REPO, load_module

PLUGINS = REPO / "plugins" / "python"
FIXTURES = REPO / "tests" / "fixtures" / "python"

if not PLUGINS.is_dir():
    pytest.skip("not run inside an evhost checkout", allow_module_level=True)

stays_module = load_module(PLUGINS / "stays" / "stays.py")
returns_module = load_module(PLUGINS / "returns" / "returns.py")
hostile_module = load_module(FIXTURES / "hostile" / "hostile.py")
hostile_projection_module = load_module(FIXTURES / "hostile-projection" / "hostile_projection.py")
hostile_policy_module = load_module(FIXTURES / "hostile-policy" / "hostile_policy.py")

HOUR_MS = 3600 * 1000


class TestStays:
    stays = stays_module.stays

    def log(self) -> list[testing.EventRecord]:
        """Check-ins at `north` and `main` (the latter naming no hospital), and check-outs;
        events are recorded one second apart per position."""
        record = testing.record
        return [
            record(1, "visit-1", "PatientCheckedIn", {"hospital": "north"}),
            record(2, "visit-2", "PatientCheckedIn", {"patient_id": "p-2"}),
            record(3, "visit-3", "PatientCheckedIn", {"hospital": "north"}),
            record(5, "visit-1", "PatientCheckedOut", {"disposition": "admitted"}),
            record(10, "visit-3", "PatientCheckedOut", {}),
            record(11, "visit-9", "PatientCheckedOut", {}),
        ]

    def test_describes_itself_as_the_parity_projection(self) -> None:
        info = self.stays.info()
        assert (info.name, info.kind, info.description) == (
            "stays-py",
            "projection",
            "Average length of stay per hospital",
        )
        assert info.categories == ("visit",)
        assert info.event_types == ("PatientCheckedIn", "PatientCheckedOut")

    def test_averages_the_stays_that_ended_per_hospital(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        state = testing.MemoryState()
        with caplog.at_level(logging.INFO, logger="evhost.plugin"):
            testing.apply(self.stays, state, self.log())
        # Stays of 4 s and 7 s.
        assert state.get("hospital/north") == {
            "hospital": "north",
            "visits": 2,
            "total_stay_ms": 11_000,
            "average_stay_ms": 5_500,
        }
        assert state.get("hospital/main") is None, "visit 2 has not ended"
        assert state.get("visit/2") == {"hospital": "main", "checked_in_ms": 1_767_225_602_000}
        assert "visit/1" not in state, "an ended visit is forgotten"
        assert "visit/9" not in state, "a check-out without a check-in changes nothing"
        assert "visit 1 at north stayed 4000 ms" in caplog.text
        assert "visit 9 checked out without a check-in seen" in caplog.text

    def test_the_average_is_floored_and_the_time_has_microseconds(self) -> None:
        state = testing.MemoryState()
        record = testing.record
        testing.apply(
            self.stays,
            state,
            [
                record(
                    1, "visit-1", "PatientCheckedIn", {}, recorded_at="2026-12-02T03:22:37.000999Z"
                ),
                record(
                    2, "visit-1", "PatientCheckedOut", {}, recorded_at="2026-12-02T03:22:38.001999Z"
                ),
                record(
                    3, "visit-2", "PatientCheckedIn", {}, recorded_at="2026-12-02T03:22:37.000000Z"
                ),
                record(
                    4, "visit-2", "PatientCheckedOut", {}, recorded_at="2026-12-02T03:22:37.002000Z"
                ),
            ],
        )
        assert state.get("hospital/main") == {
            "hospital": "main",
            "visits": 2,
            "total_stay_ms": 1_003,
            "average_stay_ms": 501,
        }

    def test_queries_answer_every_hospital_or_one(self) -> None:
        state = testing.MemoryState()
        testing.apply(self.stays, state, self.log())
        assert testing.query(self.stays, state, "hospitals") == {
            "hospitals": [
                {
                    "hospital": "north",
                    "visits": 2,
                    "total_stay_ms": 11_000,
                    "average_stay_ms": 5_500,
                }
            ]
        }
        assert (
            testing.query(self.stays, state, "hospital", {"name": "north"})["average_stay_ms"]
            == 5_500
        )
        with pytest.raises(Failure, match="^no visit has ended at hospital south$"):
            testing.query(self.stays, state, "hospital", {"name": "south"})
        with pytest.raises(Failure, match="^query hospital needs the parameter name$"):
            testing.query(self.stays, state, "hospital")
        with pytest.raises(Failure, match="^unknown query x; expected one of hospital, hospitals$"):
            testing.query(self.stays, state, "x")


class TestReturns:
    returns = returns_module.returns

    def check_in(self, position: int, visit: str, patient: str, at_ms: int) -> testing.EventRecord:
        return testing.record(
            position,
            f"visit-{visit}",
            "PatientCheckedIn",
            {
                "patient_id": patient,
                "patient_name": "Ana",
                "complaint": "x",
                "triage_level": 3,
                "hospital": "north",
            },
            recorded_at=at_ms,
        )

    def check_out(self, position: int, visit: str, at_ms: int) -> testing.EventRecord:
        return testing.record(
            position,
            f"visit-{visit}",
            "PatientCheckedOut",
            {"disposition": "discharged"},
            recorded_at=at_ms,
        )

    def test_a_return_within_72_hours_is_noted_on_the_new_visit(self) -> None:
        state = testing.MemoryState()
        start = 1_795_000_000_000
        assert testing.react(self.returns, state, self.check_in(1, "1", "p-1", start)) == []
        assert state.get("visit/1") == {"patient_id": "p-1", "hospital": "north"}
        assert testing.react(self.returns, state, self.check_out(2, "1", start + HOUR_MS)) == []
        assert "visit/1" not in state
        assert state.get("patient/p-1") == {
            "visit_id": "1",
            "hospital": "north",
            "checked_out_ms": start + HOUR_MS,
        }
        actions = testing.react(
            self.returns,
            state,
            self.check_in(3, "2", "p-1", start + HOUR_MS + 5 * HOUR_MS + 59 * 60_000),
        )
        assert actions == [
            send(
                "visit",
                "visit-2",
                "AddNote",
                {"author": "returns-py", "text": "returned 5 h after visit 1 ended"},
            )
        ]

    def test_a_return_after_72_hours_or_a_new_patient_is_not_noted(self) -> None:
        state = testing.MemoryState()
        testing.react(self.returns, state, self.check_in(1, "1", "p-1", 0))
        testing.react(self.returns, state, self.check_out(2, "1", 1_000))
        assert (
            testing.react(self.returns, state, self.check_in(3, "2", "p-1", 1_000 + 72 * HOUR_MS))
            == []
        )
        assert testing.react(self.returns, state, self.check_in(4, "3", "p-2", 2_000)) == []
        last_hour = 1_000 + 72 * HOUR_MS - 1
        [note] = testing.react(self.returns, state, self.check_in(5, "4", "p-1", last_hour))
        assert note.data["text"] == "returned 71 h after visit 1 ended"

    def test_a_check_out_without_a_check_in_changes_nothing(self) -> None:
        state = testing.MemoryState()
        assert testing.react(self.returns, state, self.check_out(1, "9", 0)) == []
        assert len(state) == 0

    def test_it_subscribes_to_check_ins_and_check_outs(self) -> None:
        info = self.returns.info()
        assert (info.name, info.kind, info.categories) == ("returns-py", "policy", ("visit",))
        assert info.event_types == ("PatientCheckedIn", "PatientCheckedOut")


class TestHostileFixtures:
    def test_the_handler_misbehaves_on_command(self, capsys: pytest.CaptureFixture[str]) -> None:
        hostile = hostile_module.hostile
        assert hostile.info().category == "hostile" and hostile.name == "hostile-py"
        assert testing.decide(hostile, "Ok") == [NewEvent("Okayed", None)]
        assert testing.decide(hostile, "Allocate", {"mib": 2}) == [
            NewEvent("Allocated", {"mib": 2})
        ]
        assert testing.decide(hostile, "Print", {"text": "hello"}) == [
            NewEvent("Printed", {"text": "hello"})
        ]
        assert capsys.readouterr().out == "hello\n"
        with pytest.raises(Rejected, match="^not today$"):
            testing.decide(hostile, "Reject", {"reason": "not today"})
        with pytest.raises(RuntimeError, match="hostile plugin raised on purpose"):
            testing.decide(hostile, "Panic")
        assert testing.replay(hostile, [("Okayed", None), ("Printed", {"text": "x"})]) == {
            "events": 2
        }
        with pytest.raises(
            Failure, match="^RuntimeError: hostile plugin's evolve raised on a Poison event$"
        ):
            testing.replay(hostile, [("Okayed", None), ("Poison", None)])

    def test_the_projection_counts_and_fails_on_poison(self) -> None:
        projection = hostile_projection_module.hostile_projection
        assert projection.info().event_types == () and projection.info().categories == ("hostile",)
        state = testing.MemoryState()
        testing.apply(
            projection,
            state,
            [
                testing.record(1, "hostile-1", "Ok", {"n": 1}),
                testing.record(42, "hostile-1", "Fine", {"n": 42}),
            ],
        )
        assert state.get("count") == 2
        assert state.get("seen/00000000000000000042") == {"n": 42}
        assert testing.query(projection, state, "count") == 2
        assert testing.query(projection, testing.MemoryState(), "count") == 0
        with pytest.raises(Failure, match="^unknown query sum; expected count$"):
            testing.query(projection, state, "sum")
        with pytest.raises(Failure, match="^poison event at position 7$"):
            testing.apply(
                projection,
                state,
                [testing.record(8, "hostile-1", "Ok"), testing.record(7, "hostile-1", "Poison")],
            )
        with pytest.raises(
            Failure, match="^RuntimeError: hostile projection raised on purpose at position 3$"
        ):
            testing.apply(projection, state, [testing.record(3, "hostile-1", "Panic")])
        assert state.get("count") == 2, "failed batches wrote nothing"

    def test_the_policy_drives_the_counter(self) -> None:
        policy = hostile_policy_module.hostile_policy
        state = testing.MemoryState()
        assert testing.react(policy, state, testing.record(5, "hostile-7", "Hello", {"x": 1})) == [
            send("counter", "counter-7", "Increment", {"by": 1})
        ]
        assert state.get("seen/00000000000000000005") == {"x": 1}
        [timer] = testing.react(
            policy,
            state,
            testing.record(
                3,
                "hostile-2",
                "Schedule",
                {"delay_ms": 1500},
                recorded_at="2026-11-23T19:35:53.000000Z",
            ),
        )
        assert timer == ScheduleTimer(
            "timer/00000000000000000003", 1_795_462_554_500, {"stream": "counter-2"}
        )
        [increment] = testing.fire_timer(policy, state, timer)
        assert increment == send("counter", "counter-2", "Increment", {"by": 1})
        assert state.get("fired/timer/00000000000000000003") == {"stream": "counter-2"}
        assert testing.reject_command(policy, state, increment, "limit reached") == []
        assert state.get("rejected/rejected-1") == {
            "command_type": "Increment",
            "stream": "counter-2",
            "reason": "limit reached",
        }
        with pytest.raises(Failure, match="^poison event at position 9$"):
            testing.react(policy, state, testing.record(9, "hostile-1", "Poison"))
        [default_timer] = testing.react(
            policy, state, testing.record(4, "hostile-2", "Schedule", {})
        )
        assert default_timer.due_ms == testing.record(4, "x-1", "T").recorded_at_ms
