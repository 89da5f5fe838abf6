"""Transactional producers and fencing: one owner per transactional id, the others stopped.

Kafka gives every ``transactional_id`` an epoch. A producer that initialises the id
(``init_transactions``, done by aiokafka's ``start()``) bumps it and aborts whatever the
previous holder had open; the previous holder's next write or commit fails with
``ProducerFenced``. Sieve uses that twice:

* ``--role all`` holds ``<group>-all``: a second ``all`` started in the same group fences
  the first *before* it recovers (so its recovery reads every committed output), and the
  first exits with :data:`~streams.exit_codes.EXIT_FENCED` and a message that points to
  the roles. Two processes with their own dedup state never both write.
* a decider holds ``<group>-decide-<partition>`` while it owns that scored partition: a
  decider that takes over (the owner died, or froze past the session timeout) fences it,
  and a thawed zombie's writes abort.

A fenced process never commits anything again; it exits at once, without its state.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from streams.config import KafkaSettings
from streams.exit_codes import EXIT_FENCED
from streams.topics import client_kwargs

log = logging.getLogger(__name__)

#: Milliseconds an open transaction may stay open before the broker aborts it (a crashed
#: owner's last transaction blocks ``read_committed`` readers at most this long when no
#: new owner fences it first).
TRANSACTION_TIMEOUT_MS = 60_000


def is_fenced(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says that a newer producer holds our transactional id."""
    from aiokafka.errors import ProducerFenced

    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ProducerFenced) or type(exc).__name__ in ("ProducerFenced", "InvalidProducerEpoch"):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def exit_fenced(role: str, transactional_id: str, group_id: str, metrics: Any = None) -> None:
    """Log why and end the process with :data:`EXIT_FENCED` (``os._exit``: no commit, no drain)."""
    if metrics is not None:
        metrics.fenced.inc()
    if role == "all":
        log.critical("fenced: another `sieve run --role all` started in consumer group %s and took over the "
                     "transactional id %s; this process has its own dedup state, so it stops instead of writing "
                     "next to it (nothing it wrote since is committed). Run ONE --role all per group; to run "
                     "several processes use --role score (any number) and --role decide (one owner plus "
                     "standbys). Exiting with %d.", group_id, transactional_id, EXIT_FENCED)
    else:
        log.critical("fenced: another decider took over %s (this one was too slow or frozen past "
                     "kafka.session_timeout_s, and the group gave its partition away); nothing this one wrote "
                     "since is committed. Exiting with %d; a supervisor may start it again as a standby.",
                     transactional_id, EXIT_FENCED)
    logging.shutdown()
    os._exit(EXIT_FENCED)


def transactional_producer(kafka: KafkaSettings, transactional_id: str, *, max_request_size: int) -> Any:
    """An aiokafka producer holding ``transactional_id`` (not started: ``await p.start()`` fences)."""
    from aiokafka import AIOKafkaProducer

    return AIOKafkaProducer(acks="all", enable_idempotence=True, linger_ms=5, transactional_id=transactional_id,
                            transaction_timeout_ms=TRANSACTION_TIMEOUT_MS, max_request_size=max_request_size,
                            client_id=f"sieve-{transactional_id}", **client_kwargs(kafka, aio=True))


def fence_previous(kafka: KafkaSettings, transactional_id: str) -> None:
    """Initialise ``transactional_id`` once, in a loop of its own: the previous holder is fenced
    and its open transaction aborted. Called before recovery, so that recovery's
    ``read_committed`` scan sees everything the previous holder will ever have committed."""

    async def init() -> None:
        producer = transactional_producer(kafka, transactional_id, max_request_size=1 << 20)
        await producer.start()
        await producer.stop()

    asyncio.run(init())
    log.info("transactional id %s initialised: any earlier holder is fenced", transactional_id)
