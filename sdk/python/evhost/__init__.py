"""Write evhost plugins in Python and build them as WebAssembly components: command handlers,
projections and policies.

- A **handler** (`Handler`, a *decider*) owns one category of streams (`visit` owns
  `visit-42`). For each command sent to one of its streams, the host folds the stream's events
  into a state with the handler's `evolve` functions, then asks its `decide` function which
  events the command produces, or why it is `Rejected`.
- A **projection** (`Projection`) folds the events it subscribes to into a key-value read model
  (`State`), exactly once per event, and answers queries about it.
- A **policy** (`Policy`) reacts to events, to its timers and to the rejection of commands it
  sent, with actions: `send` a command, `schedule` or `cancel_timer` a timer.

Events and commands are dataclasses (`@event`, `@command`, or plain `@dataclass`): the class
name is the type, the fields are the data. Functions are registered per type with decorators::

    from evhost import Envelope, Projection, State, event

    @event
    class PatientCheckedIn:
        patient_id: str
        hospital: str = "main"

    checkins = Projection("checkins", "Check-ins per hospital", categories=["visit"])

    @checkins.on(PatientCheckedIn)
    def checked_in(state: State, event: Envelope[PatientCheckedIn]) -> None:
        key = f"hospital/{event.data.hospital}"
        state.put(key, state.get(key, 0) + 1)

Everything but the component's glue runs natively, so plugins are tested with pytest through
`evhost.testing`, on the same paths the component runs. `python -m evhost build plugin.py -o
plugin.wasm` (or `evhost-py build ...`) builds the component; `evhost deploy plugin.wasm`
deploys it. Write log lines with `evhost.log`; `print()` reaches the host's log too.
`evhost.time` converts the host's timestamps.
"""

from . import log
from . import time as time  # `evhost.time`; not in __all__, so `import *` keeps the stdlib `time`
from ._codec import command, event, type_name_of
from ._envelope import Envelope, Params, entity_id_of
from ._errors import Failure, Rejected, reject
from ._handler import CommandContext, Handler, NewEvent
from ._plugin import Plugin, PluginInfo
from ._policy import (
    Action,
    CancelTimer,
    Policy,
    RejectedCommand,
    ScheduleTimer,
    SendCommand,
    Timer,
    cancel_timer,
    schedule,
    send,
)
from ._projection import Projection
from ._state import State, StateView

__version__ = "0.1.0"

__all__ = [
    "Action",
    "CancelTimer",
    "CommandContext",
    "Envelope",
    "Failure",
    "Handler",
    "NewEvent",
    "Params",
    "Plugin",
    "PluginInfo",
    "Policy",
    "Projection",
    "Rejected",
    "RejectedCommand",
    "ScheduleTimer",
    "SendCommand",
    "State",
    "StateView",
    "Timer",
    "cancel_timer",
    "command",
    "entity_id_of",
    "event",
    "log",
    "reject",
    "schedule",
    "send",
    "type_name_of",
]
