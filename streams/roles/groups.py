"""Consumer groups and transactional ids, derived per role from ``kafka.group_id``.

Each role has its own group, so scorers and deciders never share partitions with each
other: ``<group>-score`` for scorers, ``<group>-decide`` for deciders. ``all`` keeps
``<group>`` itself, so a deployment that ran before roles keeps its committed offsets.

Transactional ids are fixed per owner, never per process: a new owner initialising the
same id fences the previous one (Kafka bumps the producer epoch and aborts its open
transaction). ``all`` uses ``<group>-all``; a decider ``<group>-decide-<partition>`` for
the scored partition it owns (aiokafka's ``send_offsets_to_transaction`` takes a group
id only, without KIP-447's member metadata, so one transactional producer serves one
input partition).
"""

from __future__ import annotations

import dataclasses

from streams.config import KafkaSettings

#: The roles of ``sieve run``, default first.
ROLES = ("all", "score", "decide")


def check_role(role: str) -> str:
    """``role`` when it is one of :data:`ROLES`.

    Raises:
        ValueError: an unknown role, naming the known ones.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)} (--role or SIEVE_ROLE), got {role!r}")
    return role


def group_of(kafka: KafkaSettings, role: str) -> str:
    """The consumer group of ``role``: ``kafka.group_id`` for ``all``, ``<group_id>-<role>`` otherwise."""
    return kafka.group_id if check_role(role) == "all" else f"{kafka.group_id}-{role}"


def role_kafka(kafka: KafkaSettings, role: str) -> KafkaSettings:
    """``kafka`` with the role's consumer group: every client, checkpoint and recovery of a
    process of that role uses it."""
    return dataclasses.replace(kafka, group_id=group_of(kafka, role))


def transactional_id(kafka: KafkaSettings, role: str, partition: int | None = None) -> str:
    """The fixed transactional id of the owner of ``role`` (a decider: of one scored partition).

    ``kafka`` is the base settings (``kafka.group_id`` as configured, not the role's group).
    """
    if check_role(role) == "all":
        return f"{kafka.group_id}-all"
    if role == "decide":
        if partition is None:
            raise ValueError("a decider's transactional id names its scored partition")
        return f"{kafka.group_id}-decide-{partition}"
    raise ValueError("scorers write without transactions (at-least-once): they have no transactional id")
