"""Run a real, single-node Apache Kafka broker for tests, CI and the demo.

The broker is the genuine Kafka server in KRaft mode (broker and controller in one
JVM on 127.0.0.1), never a mock.  Its jars come from Maven Central via Maven and
are cached in ``${SIEVE_CACHE:-~/.cache/sieve}/kafka/<version>/libs``, so only the
first run needs the network; it runs on the machine's ``java`` (17 or newer).
Topics are not auto-created (``auto.create.topics.enable=false``): code must
create its topics as it must in production, and a mistyped name fails loudly.
Pass ``auto_create_topics=True`` (CLI: ``--auto-create-topics``) to allow it.
"""
from __future__ import annotations

import argparse, base64, contextlib, fcntl, json, os, re, shutil, signal, socket
import struct, subprocess, sys, tempfile, time, uuid
from pathlib import Path

#: 4.4.0 is on Maven Central but unresolvable: its pom needs kafka-tools-api 4.4.0,
#: which was never published there.  4.3.1 is the newest 4.x that resolves, and
#: aiokafka 0.14.0 and kafka-python 3.0.12 both pass the integration tests on it.
KAFKA_VERSION = os.environ.get("SIEVE_KAFKA_VERSION", "4.3.1")
LOG4J_VERSION = "2.25.5"  # log4j2 binding for Kafka's slf4j 1.7 logging

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>
 <groupId>sieve.local</groupId><artifactId>kafka-libs</artifactId><version>{v}</version><packaging>pom</packaging>
 <dependencies>
  <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{v}</version></dependency>
  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
   <version>{l}</version></dependency>
  <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
   <version>{l}</version><exclusions><exclusion><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
   </exclusion></exclusions></dependency>
 </dependencies>
 <build><plugins><plugin><groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId>
  <version>3.8.1</version></plugin></plugins></build>
</project>
"""
_LOG4J2 = ("status = warn\nappender.f.type = File\nappender.f.name = F\nappender.f.fileName = {log}\n"
           "appender.f.layout.type = PatternLayout\nappender.f.layout.pattern = [%d] %p %m (%c)%n\n"
           "rootLogger.level = INFO\nrootLogger.appenderRef.f.ref = F\n"
           "logger.req.name = kafka.request.logger\nlogger.req.level = WARN\n")


class KafkaError(RuntimeError):
    """Raised when the local broker cannot be fetched, started or stopped."""


def cache_dir() -> Path:
    """Return the cache root: ``$SIEVE_CACHE``, else ``~/.cache/sieve``."""
    return Path(os.environ.get("SIEVE_CACHE") or Path.home() / ".cache" / "sieve").expanduser()


def _java() -> str:
    """Return the path of a Java 17+ ``java``, or explain how to get one."""
    java = shutil.which("java")
    if not java:
        raise KafkaError("`java` was not found on PATH; install a Java 17+ runtime "
                         "(e.g. `apt-get install openjdk-17-jre-headless`) or add it to PATH.")
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(?:1\.)?(\d+)', out)
    if not m or int(m.group(1)) < 17:
        raise KafkaError(f"Kafka 4.x needs Java 17 or newer, but `{java}` reports {out.strip()!r}; "
                         "install Java 17+ and put it first on PATH.")
    return java


def fetch(version: str = KAFKA_VERSION) -> Path:
    """Download the broker jars for ``version`` with Maven and return their directory.

    A complete cache is returned at once, without any network access.  Maven
    copies the jars into a temporary directory that is renamed into place only on
    success, and a file lock serialises concurrent fetches of one version, so an
    interrupted or parallel run never leaves a half-filled cache behind.
    """
    root = cache_dir() / "kafka" / version
    libs = root / "libs"
    if (libs / ".complete").exists():
        return libs
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs  # another process fetched it while we waited
        mvn = shutil.which("mvn")
        if not mvn:
            raise KafkaError("`mvn` was not found on PATH; install Apache Maven 3.6+ (e.g. "
                             "`apt-get install maven`), which fetches the broker from Maven Central.")
        for stale in [*root.glob(".libs-*"), libs]:  # leftovers of an interrupted fetch
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".libs-", dir=root))
        try:
            (root / "pom.xml").write_text(_POM.format(v=version, l=LOG4J_VERSION))
            proc = subprocess.run([mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(root / "pom.xml"),
                                   "dependency:copy-dependencies", "-DincludeScope=runtime",
                                   f"-DoutputDirectory={tmp}"], capture_output=True, text=True)
            if proc.returncode != 0 or not any(tmp.glob("kafka_2.13-*.jar")):
                raise KafkaError(
                    f"Maven could not fetch org.apache.kafka:kafka_2.13:{version} (exit {proc.returncode}). "
                    "Check that this version and all its dependencies are on Maven Central and that "
                    f"Maven can reach it (proxy: ~/.m2/settings.xml).\n{(proc.stdout + proc.stderr)[-3000:]}")
            (tmp / ".complete").write_text(version + "\n")
            os.rename(tmp, libs)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return libs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Tell whether ``pid`` runs; a zombie (exited but not yet reaped) counts as dead."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: fall back to signal 0
        with contextlib.suppress(ProcessLookupError):
            return os.kill(pid, 0) is None
        return False


def _api_versions_ok(port: int, timeout: float = 2.0) -> bool:
    """Send a Kafka ApiVersions request and tell whether the broker answered without error.

    A KRaft broker opens its client listener only once it is started and unfenced,
    so an answer means clients can use it.
    """
    body = struct.pack(">hhih", 18, 0, 7, 11) + b"sieve-probe"  # api key, version, correlation id, client id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(struct.pack(">i", len(body)) + body)
            head = s.recv(10, socket.MSG_WAITALL)
        return len(head) == 10 and struct.unpack(">iih", head)[1:] == (7, 0)
    except OSError:
        return False


def _terminate(pid: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Send SIGTERM to ``pid``, and SIGKILL if it still runs after ``timeout`` seconds."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if (proc.poll() is not None) if proc else not _alive(pid):
                return
            time.sleep(0.1)
    raise KafkaError(f"The Kafka broker (pid {pid}) survived SIGKILL; inspect it with `ps -p {pid}`.")


class LocalKafka:
    """A single-node Kafka (KRaft broker + controller) on 127.0.0.1, usable as a context manager.

    Each instance picks its own free ports and, unless ``data_dir`` is given, its
    own temporary data directory, so several processes can run brokers at once.
    ``stop()`` removes a directory it created unless ``keep_data`` is true.  Logs go
    to ``<data_dir>/logs/server.log`` (and the JVM's own output to ``stdout.log``).
    """

    def __init__(self, version: str | None = None, *, port: int | None = None, num_partitions: int = 1,
                 data_dir: str | os.PathLike | None = None, keep_data: bool = False,
                 auto_create_topics: bool = False, start_timeout: float = 120.0, heap: str = "512m"):
        self.version, self.port, self._fixed_port = version or KAFKA_VERSION, port, port is not None
        self.num_partitions, self.auto_create_topics = num_partitions, auto_create_topics
        self.start_timeout, self.heap, self.keep_data = start_timeout, heap, keep_data
        self.data_dir, self._own_dir = (Path(data_dir) if data_dir else None), data_dir is None
        self.controller_port: int | None = None
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        """The ``"127.0.0.1:PORT"`` string that clients pass as ``bootstrap_servers``."""
        if self.port is None:
            raise KafkaError("The broker has not been started; call start() first.")
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> LocalKafka:
        """Fetch the jars if needed, format the storage, launch the broker and wait until it answers.

        Raises ``KafkaError`` with the tail of the broker's log when it exits or
        does not answer within ``start_timeout`` seconds.  A port taken by another
        process between choosing and binding it is retried with new ports.
        """
        java, libs = _java(), fetch(self.version)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="sieve-kafka-"))
        (self.data_dir / "logs").mkdir(parents=True, exist_ok=True)
        for attempt in range(3):
            self.port = self.port if self._fixed_port else _free_port()
            self.controller_port = _free_port()
            while self.controller_port == self.port:
                self.controller_port = _free_port()
            try:
                return self._launch(java, libs)
            except BaseException as e:
                self.stop(remove_data=False)
                if "Address already in use" in str(e) and attempt < 2 and not self._fixed_port:
                    continue
                self.stop()  # the error carries the log tail, so the data dir can go
                raise
        raise AssertionError("unreachable")

    def _launch(self, java: str, libs: Path) -> LocalKafka:
        d, cport = self.data_dir, self.controller_port
        for log in ("server.log", "stdout.log"):  # keep only this attempt's logs
            (d / "logs" / log).unlink(missing_ok=True)
        (props := d / "server.properties").write_text("\n".join([
            "process.roles=broker,controller", "node.id=1", f"controller.quorum.voters=1@127.0.0.1:{cport}",
            f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}", "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={d / 'kraft'}", f"num.partitions={self.num_partitions}",
            f"auto.create.topics.enable={str(self.auto_create_topics).lower()}",
            "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=1",
            "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=1", "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1", "group.initial.rebalance.delay.ms=0", ""]))
        (d / "log4j2.properties").write_text(_LOG4J2.format(log=d / "logs" / "server.log"))
        jvm = [java, f"-Xmx{self.heap}", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
               "-Dlog4j2.shutdownHookEnabled=false", f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}",
               f"-Dkafka.logs.dir={d / 'logs'}", "-cp", f"{libs}/*"]
        if not (d / "kraft" / "meta.properties").exists():  # a kept data dir is reused as is
            cluster_id = "-"
            while cluster_id.startswith("-"):  # the storage tool would parse a leading "-" as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            fmt = subprocess.run(jvm + ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props),
                                        "--ignore-formatted"], capture_output=True, text=True)
            if fmt.returncode != 0:
                raise KafkaError(f"Formatting the Kafka storage in {d} failed:\n{fmt.stdout}{fmt.stderr}")
        with open(d / "logs" / "stdout.log", "ab") as out:
            self._proc = subprocess.Popen(jvm + ["kafka.Kafka", str(props)], stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if (rc := self._proc.poll()) is not None:
                raise KafkaError(f"The Kafka broker (pid {self.pid}) exited with code {rc} while starting."
                                 f"\n{self._tail()}")
            if _api_versions_ok(self.port):
                return self
            time.sleep(0.25)
        raise KafkaError(f"The Kafka broker did not answer on {self.bootstrap} within {self.start_timeout:.0f}s; "
                         f"raise start_timeout on a slow machine.\n{self._tail()}")

    def _tail(self, lines: int = 30) -> str:
        """Return the broker's first error lines and last log lines, for error messages."""
        parts = []
        for f in (self.data_dir / "logs" / "stdout.log", self.data_dir / "logs" / "server.log"):
            text = f.read_text(errors="replace").splitlines() if f.exists() else []
            errors = [line for line in text if " ERROR " in line or line.startswith("Caused by:")][:12]
            if errors:
                parts.append(f"--- first errors in {f} ---\n" + "\n".join(errors))
            if text:
                parts.append(f"--- end of {f} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(the broker wrote no log)"

    def stop(self, timeout: float = 20.0, remove_data: bool | None = None) -> None:
        """Stop the broker with SIGTERM, then SIGKILL if it still runs after ``timeout`` seconds.

        The data directory is removed if this object created it and ``keep_data``
        is false; ``remove_data`` overrides that choice.  Stopping twice is harmless.
        """
        if self.pid is not None and (self._proc is not None or _alive(self.pid)):
            _terminate(self.pid, timeout, self._proc)
        self._proc = self.pid = None
        if remove_data is None:
            remove_data = self._own_dir and not self.keep_data
        if remove_data and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- command line

def _state_file(name: str) -> Path:
    return cache_dir() / "kafka" / "run" / f"{name}.json"


def _read_state(name: str) -> dict:
    try:
        return json.loads(_state_file(name).read_text())
    except (FileNotFoundError, ValueError):
        raise KafkaError(f"No broker named {name!r} is recorded in {_state_file(name)}; "
                         "start one with `python -m streams.local_kafka start --detach`.") from None


def _is_our_broker(state: dict) -> bool:
    """Tell whether the recorded pid still is our broker (and not a reused pid)."""
    with contextlib.suppress(OSError):
        return _alive(state["pid"]) and state["data_dir"] in Path(f"/proc/{state['pid']}/cmdline").read_text()
    return _alive(state["pid"])


def _cmd_start(a: argparse.Namespace) -> int:
    old = None
    with contextlib.suppress(KafkaError):
        old = _read_state(a.name)
    if old and _is_our_broker(old):
        raise KafkaError(f"A broker named {a.name!r} already runs at {old['bootstrap']} (pid {old['pid']}); "
                         f"stop it with `python -m streams.local_kafka stop --name {a.name}` or pick another --name.")
    kafka = LocalKafka(a.version, port=a.port, num_partitions=a.partitions, data_dir=a.data_dir,
                       keep_data=a.keep_data, auto_create_topics=a.auto_create_topics, start_timeout=a.timeout)
    kafka.start()
    _state_file(a.name).parent.mkdir(parents=True, exist_ok=True)
    _state_file(a.name).write_text(json.dumps({
        "bootstrap": kafka.bootstrap, "pid": kafka.pid, "data_dir": str(kafka.data_dir),
        "version": kafka.version, "remove_data": kafka._own_dir and not kafka.keep_data}, indent=1))
    print(kafka.bootstrap, flush=True)
    how = "detached" if a.detach else "in the foreground; Ctrl-C stops it"
    print(f"Kafka {kafka.version} runs {how} (pid {kafka.pid}, data in {kafka.data_dir}).", file=sys.stderr)
    if a.detach:
        return 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM acts like Ctrl-C
    try:
        while kafka._proc.poll() is None:
            time.sleep(0.5)
        print(f"The broker exited unexpectedly.\n{kafka._tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        kafka.stop()
        _state_file(a.name).unlink(missing_ok=True)


def _cmd_stop(a: argparse.Namespace) -> int:
    state = _read_state(a.name)
    if _is_our_broker(state):
        _terminate(state["pid"], a.timeout)
    if state.get("remove_data") and not a.keep_data:
        shutil.rmtree(state["data_dir"], ignore_errors=True)
    _state_file(a.name).unlink(missing_ok=True)
    print(f"stopped the broker at {state['bootstrap']} (pid {state['pid']})")
    return 0


def _cmd_status(a: argparse.Namespace) -> int:
    try:
        state = _read_state(a.name)
    except KafkaError as e:
        print(e, file=sys.stderr)
        return 1
    state["running"] = _is_our_broker(state)
    state["answering"] = state["running"] and _api_versions_ok(int(state["bootstrap"].rsplit(":", 1)[1]))
    print(json.dumps(state, indent=1))
    return 0 if state["answering"] else 1


def main(argv: list[str] | None = None) -> int:
    """Run the ``python -m streams.local_kafka`` command line and return its exit status."""
    p = argparse.ArgumentParser(prog="python -m streams.local_kafka", description=__doc__.split("\n")[0],
                                epilog=f"Jars and state files live under $SIEVE_CACHE (now {cache_dir()}); "
                                       f"the Kafka version is $SIEVE_KAFKA_VERSION or {KAFKA_VERSION}.")
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{fetch,start,stop,status}")
    f = sub.add_parser("fetch", help="download the broker jars with Maven into the cache; print their directory")
    s = sub.add_parser("start", help="start a broker and print its bootstrap address")
    t = sub.add_parser("stop", help="stop the broker that `start` recorded under --name")
    u = sub.add_parser("status", help="print the recorded broker's state; exit 0 only if it answers")
    for c in (f, s):
        c.add_argument("--version", default=KAFKA_VERSION, help="Kafka version (default %(default)s)")
    for c in (s, t, u):
        c.add_argument("--name", default="default", help="name of the state file (default %(default)s)")
    s.add_argument("--detach", action="store_true", help="return once the broker answers; `stop` ends it")
    s.add_argument("--port", type=int, help="client port on 127.0.0.1 (default: a free one)")
    s.add_argument("--partitions", type=int, default=1, help="num.partitions of new topics (default 1)")
    s.add_argument("--auto-create-topics", action="store_true", help="set auto.create.topics.enable=true")
    s.add_argument("--data-dir", help="data directory (default: a new temporary one)")
    s.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for start-up (default 120)")
    for c in (s, t):
        c.add_argument("--keep-data", action="store_true", help="keep the data directory when stopping")
    t.add_argument("--timeout", type=float, default=20.0, help="seconds before SIGKILL (default 20)")
    a = p.parse_args(argv)
    try:
        if a.cmd == "fetch":
            print(fetch(a.version))
            return 0
        return {"start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status}[a.cmd](a)
    except KafkaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
