"""The roles of ``sieve run``: ``all`` (one process does everything), ``score`` (stage 1,
stateless, any number) and ``decide`` (stage 2, one fenced owner plus standbys).

* :mod:`~streams.roles.groups`: the consumer group and transactional id of each role;
* :mod:`~streams.roles.scored`: the record a scorer writes to ``kafka.scored_topic``;
* :mod:`~streams.roles.fencing`: transactional producers, and what a fenced process does;
* :mod:`~streams.roles.decider`: the decider's consume-transform-produce loop;
* :mod:`~streams.roles.takeover`: what a decider does when it becomes the owner.

docs/streams.md ("Roles") explains the topology and why it is built this way.
"""

from streams.roles.groups import ROLES, role_kafka, transactional_id

__all__ = ["ROLES", "role_kafka", "transactional_id"]
