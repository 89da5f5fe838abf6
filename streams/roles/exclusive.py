"""One topology per ``kafka.group_id``: an ``all`` worker never runs beside scorers or deciders of it.

The roles use their own consumer groups (:mod:`streams.roles.groups`): ``<group>`` for
``all``, ``<group>-score`` and ``<group>-decide`` for the split. Kafka alone would let an
``all`` worker and a decider run together: both read every input (one from the raw topic,
one through the scorers) and both write the same outputs, each with its own dedup state,
so every input is decided twice. At start a process looks at the other topology's groups
and refuses (exit 2, saying why) while one of them has live members.

Best effort, by design: two processes started within the same second can both pass the
check, and a process killed with ``kill -9`` stays a member until its session times out
(``kafka.session_timeout_s``), so a switch from ``all`` to the roles right after such a
kill is refused until then (a supervisor's restart then succeeds). A broker that does not
let this client describe groups (ACLs) skips the check with a warning.
"""

from __future__ import annotations

import logging

from streams.config import KafkaSettings
from streams.roles.groups import group_of

log = logging.getLogger(__name__)

#: Milliseconds the group description may take.
DESCRIBE_TIMEOUT_MS = 15_000


def other_topology(role: str) -> tuple[str, ...]:
    """The roles that must not run beside ``role`` under the same ``kafka.group_id``."""
    return ("score", "decide") if role == "all" else ("all",)


def live_members(kafka: KafkaSettings, groups: list[str]) -> dict[str, int]:
    """Group -> its live members, for the groups of ``groups`` that have any."""
    from kafka.admin import KafkaAdminClient

    from streams.topics import client_kwargs

    admin = KafkaAdminClient(request_timeout_ms=DESCRIBE_TIMEOUT_MS, client_id="sieve-topology-check",
                             **client_kwargs(kafka))
    try:
        described = admin.describe_groups(groups)
    finally:
        admin.close()
    # kafka-python 3.0 (pinned): {group id: its DescribeGroups entry}
    return {str(g): len(d["members"]) for g, d in described.items() if d.get("members")}


def refuse_mixed_topology(base: KafkaSettings, role: str) -> None:
    """Raises ValueError (exit 2) while a process of the other topology is a live member of its group.

    ``base`` is the configured Kafka settings (``kafka.group_id`` as set, not the role's group).
    """
    others = {group_of(base, r): r for r in other_topology(role)}
    try:
        live = live_members(base, list(others))
    except Exception as exc:  # noqa: BLE001 - the check is a guard, not a dependency: say so and go on
        log.warning("could not check for a `sieve run --role %s` of another topology in consumer groups %s "
                    "(%s: %s); starting anyway", role, ", ".join(others), type(exc).__name__, exc)
        return
    if not live:
        return
    found = "; ".join(f"consumer group {g!r} (`--role {others[g]}`) has {n} live member{'s' * (n != 1)}"
                      for g, n in live.items())
    if role == "all":
        hint = ("an `all` worker beside those roles would decide every input a second time, with dedup state of "
                "its own. Stop them to run `all`, or run more `--role score` processes instead")
    else:
        hint = ("the split roles beside an `all` worker would decide every input a second time, with dedup "
                "state of their own. Stop the `all` worker first (docs/streams.md, 'Roles')")
    raise ValueError(f"refusing to start `sieve run --role {role}` with kafka.group_id={base.group_id!r}: "
                     f"{found}, writing the same outputs; {hint}. A process killed moments ago stays a member "
                     f"for up to kafka.session_timeout_s={base.session_timeout_s:g}s")
