"""A real Kafka broker whose client listener is SASL_SSL (SASL/PLAIN over TLS), for the security tests.

It runs the same jars as :class:`streams.local_kafka.LocalKafka` (fetched and cached by
its :func:`~streams.local_kafka.fetch`), with a self-signed certificate for
``127.0.0.1`` made by ``keytool`` (it ships with the Java runtime the broker needs
anyway) and one SASL/PLAIN user. A second, PLAINTEXT listener carries only the
broker's own traffic and the readiness probe; clients bootstrap on the SASL_SSL port
and are told only about it.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from streams.local_kafka import _LOG4J2, KafkaError, _api_versions_ok, _free_port, _java, _terminate, fetch

#: Seconds the broker may take to answer (a cold JVM on a busy 2-core machine).
SECURE_BROKER_START_TIMEOUT = 120.0
STORE_PASSWORD = "sieve-test-store"


def _keytool(java: str) -> str:
    beside = Path(java).resolve().parent / "keytool"
    found = str(beside) if beside.exists() else shutil.which("keytool")
    if not found:
        raise KafkaError("`keytool` (part of every Java runtime) was not found beside java or on PATH")
    return found


class SecureKafka:
    """A single-node KRaft broker: SASL_SSL for clients, user ``username`` with ``password``.

    ``cafile`` is the PEM certificate clients must trust (``kafka.ssl_cafile``).
    """

    def __init__(self, workdir: Path, username: str, password: str) -> None:
        self.workdir = workdir
        self.username = username
        self.password = password
        self.cafile = workdir / "broker-cert.pem"
        self.port = self.internal_port = self.controller_port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _certificate(self, java: str) -> Path:
        keystore = self.workdir / "broker.p12"
        keytool = _keytool(java)
        for args in (["-genkeypair", "-alias", "broker", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
                      "-dname", "CN=127.0.0.1", "-ext", "SAN=ip:127.0.0.1", "-storetype", "PKCS12",
                      "-keypass", STORE_PASSWORD],
                     ["-exportcert", "-rfc", "-alias", "broker", "-file", str(self.cafile)]):
            done = subprocess.run([keytool, *args, "-keystore", str(keystore), "-storepass", STORE_PASSWORD],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise KafkaError(f"keytool {args[0]} failed: {done.stdout}{done.stderr}")
        return keystore

    def start(self, timeout: float = SECURE_BROKER_START_TIMEOUT) -> "SecureKafka":
        java, libs = _java(), fetch()
        keystore = self._certificate(java)
        self.port, self.internal_port, self.controller_port = _free_port(), _free_port(), _free_port()
        if len({self.port, self.internal_port, self.controller_port}) < 3:
            raise KafkaError("could not pick three distinct free ports; run again")
        d = self.workdir
        (d / "logs").mkdir(exist_ok=True)
        jaas = (f'org.apache.kafka.common.security.plain.PlainLoginModule required '
                f'user_{self.username}="{self.password}";')
        (props := d / "server.properties").write_text("\n".join([
            "process.roles=broker,controller", "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners=SASL_SSL://127.0.0.1:{self.port},PLAINTEXT://127.0.0.1:{self.internal_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            f"advertised.listeners=SASL_SSL://127.0.0.1:{self.port},PLAINTEXT://127.0.0.1:{self.internal_port}",
            "controller.listener.names=CONTROLLER", "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            "sasl.enabled.mechanisms=PLAIN", f"listener.name.sasl_ssl.plain.sasl.jaas.config={jaas}",
            f"ssl.keystore.location={keystore}", "ssl.keystore.type=PKCS12",
            f"ssl.keystore.password={STORE_PASSWORD}", f"ssl.key.password={STORE_PASSWORD}",
            f"log.dirs={d / 'kraft'}", "num.partitions=1", "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1", "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0", ""]))
        (d / "log4j2.properties").write_text(_LOG4J2.format(log=d / "logs" / "server.log"))
        jvm = [java, "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
               "-Dlog4j2.shutdownHookEnabled=false", f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={d / 'logs'}", "-cp", f"{libs}/*"]
        cluster_id = "A" + base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()[1:]
        fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props)],
                             capture_output=True, text=True)
        if fmt.returncode != 0:
            raise KafkaError(f"formatting the secure broker's storage failed:\n{fmt.stdout}{fmt.stderr}")
        with open(d / "logs" / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdin=subprocess.DEVNULL, stdout=out,
                                          stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaError(f"the secure broker exited with {self._proc.returncode}:\n{self.log_tail()}")
            if _api_versions_ok(self.internal_port):
                return self
            time.sleep(0.25)
        raise KafkaError(f"the secure broker did not answer within {timeout:.0f}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        text = ""
        for f in (self.workdir / "logs" / "stdout.log", self.workdir / "logs" / "server.log"):
            if f.exists():
                text += f"--- {f.name} ---\n" + f.read_text(errors="replace")[-chars:]
        return text

    def stop(self, timeout: float = 20.0) -> None:
        if self._proc is not None:
            _terminate(self._proc.pid, timeout, self._proc)
            self._proc = None
