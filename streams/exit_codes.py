"""Exit statuses of ``sieve run`` (and the other commands), in one place.

A supervisor (systemd, Kubernetes, Docker's restart policy) tells them apart: 2 needs a
person (a setting is wrong), 69 and 75 and 76 go away by themselves or by a restart, 77
says another process owns this one's job now.
``sieve run --help`` and docs/streams.md list them; tests/unit/streams/test_cli.py
checks that the help names every one.
"""

from __future__ import annotations

#: Stopped by SIGTERM or Ctrl-C after the current batch was delivered and committed.
EXIT_OK = 0
#: An unexpected error (a bug, or a client error Sieve does not know): the log has the traceback.
EXIT_UNEXPECTED = 1
#: A usage or configuration error, named in a one-line message: a bad setting or flag, a missing
#: file or extra, the metrics port in use, outputs that name inputs past the raw topic's end.
EXIT_USAGE = 2
#: Kafka could not be reached at start-up (EX_UNAVAILABLE): check kafka.brokers and the
#: credentials, and that the broker is up; restarting later is safe.
EXIT_KAFKA_UNREACHABLE = 69
#: An output could not be delivered, or a batch failed (EX_TEMPFAIL): nothing of that batch
#: was committed; restart (recovery skips what was already decided).
EXIT_DELIVERY_FAILED = 75
#: The raw topic was deleted and created again, and the worker could not move its consumer
#: to the new topic in place: restart; recovery then reads the new topic from its beginning.
EXIT_TOPIC_SWITCH_FAILED = 76
#: Another process took over this one's transactional id (a newer ``--role all`` in the same
#: group, or a decider that took the scored partition over): this one's open transaction was
#: aborted and it may write nothing more. Do not restart it blindly: see the message.
EXIT_FENCED = 77

#: ``(status, meaning)`` for help texts, in order.
EXIT_STATUSES = (
    (EXIT_OK, "stopped by SIGTERM or Ctrl-C after delivering and committing the current batch"),
    (EXIT_UNEXPECTED, "unexpected error (a bug): the log has the traceback"),
    (EXIT_USAGE, "usage or configuration error, named in the message (bad setting, missing file, "
                 "metrics port in use, outputs naming inputs past the raw topic's end)"),
    (EXIT_KAFKA_UNREACHABLE, "Kafka unreachable at start-up: check kafka.brokers, credentials and the "
                             "broker; restarting later is safe"),
    (EXIT_DELIVERY_FAILED, "an output could not be delivered or a batch failed: nothing of it was "
                           "committed; restart"),
    (EXIT_TOPIC_SWITCH_FAILED, "the raw topic was recreated and the consumer could not move to it in "
                               "place: restart (recovery reads the new topic from its beginning)"),
    (EXIT_FENCED, "fenced: another process took over this one's transactional id (a second --role all in "
                  "the same group, or a decider that took over); nothing this one wrote after that is "
                  "committed. Run one --role all per group, or use --role score/decide to scale"),
)


class KafkaUnreachable(RuntimeError):
    """Kafka did not answer at start-up; ``sieve`` exits with :data:`EXIT_KAFKA_UNREACHABLE`."""


class PortInUse(OSError):
    """The metrics port cannot be bound: a usage error (``sieve`` exits :data:`EXIT_USAGE` with the message)."""


def help_text(width: int = 88) -> str:
    """The exit statuses as wrapped lines for ``--help``."""
    import textwrap

    return "\n".join(textwrap.fill(meaning, width, initial_indent=f"  {code:<4}", subsequent_indent=" " * 6)
                     for code, meaning in EXIT_STATUSES)


#: What to do about errors a batch can end with, by exception class name (aiokafka's and kafka-python's).
_HINTS = {
    "KafkaTimeoutError": "the broker did not acknowledge the outputs in time: is Kafka at {brokers} up and "
                         "reachable?",
    "RequestTimedOutError": "the broker did not answer in time: is Kafka at {brokers} up and reachable?",
    "KafkaConnectionError": "cannot connect to Kafka at {brokers}: check that the broker is up, the address "
                            "and the credentials",
    "NoBrokersAvailable": "no broker of {brokers} answers: check that Kafka is up and the address",
    "NotEnoughReplicasError": "an output topic has fewer in-sync replicas than min.insync.replicas (acks=all): "
                              "bring the brokers back or lower the topic's min.insync.replicas",
    "MessageSizeTooLargeError": "an envelope is larger than the topic's max.message.bytes: raise it, or lower "
                                "kafka.max_output_bytes",
    "RecordTooLargeError": "an envelope is larger than the topic's max.message.bytes: raise it, or lower "
                           "kafka.max_output_bytes",
    "TopicAuthorizationFailedError": "this client may not write to an output topic: grant it WRITE (ACLs)",
    "UnknownTopicOrPartitionError": "an output topic does not exist (deleted?): restart the worker, which "
                                    "creates missing topics",
    "NotLeaderForPartitionError": "an output topic's partition has no leader: the topic was deleted (the "
                                  "restarted worker creates it again) or a broker is down",
    "LeaderNotAvailableError": "an output topic's partition has no leader: the topic was deleted (the "
                               "restarted worker creates it again) or a broker is down",
    "OutputTooLarge": "lower pipeline.filters.max_total_chars or raise kafka.max_output_bytes",
    "CancelledError": "the batch was cancelled while the worker stopped",
    "ProducerFenced": "another process took over this transactional id (see exit status 77)",
}


def describe_error(exc: BaseException, kafka: object | None = None) -> str:
    """``"<Class>: <text> (<what to do>)"``: never just the class name twice (aiokafka's
    ``KafkaTimeoutError`` prints as its own name)."""
    name = type(exc).__name__
    text = str(exc).strip()
    out = name if not text or text == name else f"{name}: {text}"
    hint = _HINTS.get(name)
    if hint:
        out += " -- " + hint.format(brokers=f"kafka.brokers={getattr(kafka, 'brokers', '?')!r}")
    return out
