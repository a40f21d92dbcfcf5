#!/usr/bin/env python3
"""The end-to-end test of examples/kv, run by `make test` (or `make kv-test`).

It starts three kv-servers with examples/kv/cluster.sh on ports that are free at run time (and
later three more, as the cluster grows), and:
  1. writes 1,000 keys;
  2. checks that GETs add nothing to the Raft log (the leader serves them as ReadIndex reads),
     that a follower redirects a GET to the leader, and that a GET answers the latest
     acknowledged write (read-your-writes, and a write seen by another client) across many keys;
  3. checks compare-and-set and at-most-once writes (a retried sequence number);
  4. sends bad input to the Raft and HTTP ports of every replica (the transfer endpoint's
     included), and checks they go on serving;
  5. asks the leader to hand its leadership to another replica while four clients keep writing
     and reading back; checks that the target leads within 2 s, that every acknowledged write
     is readable, and that every write refused meanwhile got a 503 with a reason (one that says
     "not applied" was indeed not applied); then transfers back with cluster.sh transfer;
  6. kills the leader with SIGKILL while four clients keep writing, and restarts it later;
  7. checks that every acknowledged write is readable from the new leader, that every write
     was applied exactly once, and that the three replicas converge to the same map;
  8. membership: sends bad input to the membership endpoints of every replica, and to
     cluster.sh add and remove; then, while four clients keep writing (and reading back), grows
     the cluster from 3 voters to 5 (cluster.sh add 4, add 5), replaces the leader by a new
     replica (cluster.sh add 6, remove), and removes a follower that it leaves running for 2 s
     (it must not disturb the others); checks every acknowledged write is readable through the
     leader, applied once, and that the remaining replicas hold the same map and configuration;
  9. stops them all, starts them again from their data directories (those that joined too), and
     checks they come back with the same map and configuration.
The last line it prints says "passed" or "FAILED"; the exit status is 0 only if it passed.

usage: tests/kv/e2e.py [path/to/kv-server]      (default: build/kv-server)
"""
import http.client
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_SH = ROOT / "examples" / "kv" / "cluster.sh"
IDS = (1, 2, 3)  # the replicas that start the cluster
MAX_ID = 6  # and those added later: 4, 5, 6
TIME_LIMIT = 150  # seconds; the test normally takes well under a minute
WRITERS = 4  # concurrent clients


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def free_base_port():
    """A base port B such that B+1..B+6 (Raft) and B+1001..B+1006 (HTTP) are free right now.

    It is below the kernel's range of ephemeral ports (32768 and up), so that outgoing
    connections do not take these ports in the moment before the servers bind them.
    """
    chooser = random.SystemRandom()
    for _ in range(200):
        base = chooser.randrange(10000, 31000)
        sockets = []
        try:
            ids = range(1, MAX_ID + 1)
            for port in [base + n for n in ids] + [base + 1000 + n for n in ids]:
                probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(probe)
                probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for probe in sockets:
                probe.close()
    raise Failure("found no free ports")


class Cluster:
    """The servers, driven through examples/kv/cluster.sh."""

    def __init__(self, server, base, directory):
        self.base = base
        self.directory = directory
        self.ids = list(IDS)  # the replicas of the cluster now; replaced, never changed in place
        self.started = set(IDS)  # every replica that ever ran, for the logs
        # Snapshots every 1,000 entries (the servers' default is 100,000), so that a replica
        # restarted after 1,100 writes catches up through one.
        self.env = dict(os.environ, KV_SERVER=str(server), KV_BASE_PORT=str(base),
                        KV_DIR=str(directory), KV_SNAPSHOT_EVERY="1000")

    def sh(self, *arguments, status=0):
        done = subprocess.run([str(CLUSTER_SH), *map(str, arguments)], env=self.env,
                              capture_output=True, text=True, timeout=30)
        check(done.returncode == status,
              f"cluster.sh {' '.join(map(str, arguments))}: exit {done.returncode}, wanted "
              f"{status}: {done.stdout} {done.stderr}")
        return done.stdout

    def raft_port(self, n):
        return self.base + n

    def client_port(self, n):
        return self.base + 1000 + n

    def state(self, n):
        """Replica n's /debug/state, or None if it does not answer."""
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.client_port(n), timeout=1)
            connection.request("GET", "/debug/state")
            response = connection.getresponse()
            body = response.read()
            connection.close()
            return json.loads(body) if response.status == 200 else None
        except (OSError, http.client.HTTPException, ValueError):
            return None

    def wait_for_leader(self, among=None, timeout=10):
        among = among or self.ids
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n in among:
                state = self.state(n)
                if state and state["leader"] == n:
                    return n
            time.sleep(0.05)
        raise Failure(f"no leader among replicas {list(among)} after {timeout} s")

    def wait_for_convergence(self, timeout=20):
        """Waits until every replica has applied the same log, holds the same map, and has the
        same configuration."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = [self.state(n) for n in self.ids]
            if all(states):
                views = {(s["last_applied"], s["digest"], s["keys"], s["revision"],
                          tuple(s["voters"]), tuple(s["learners"])) for s in states}
                if len(views) == 1:
                    return states[0]
            time.sleep(0.1)
        raise Failure(f"the replicas did not converge in {timeout} s: {states}")

    def wait_for_leader_to_be(self, target, timeout):
        """Waits until every replica names `target` as the leader; returns the time it took."""
        started = time.monotonic()
        while time.monotonic() < started + timeout:
            if all((self.state(n) or {}).get("leader") == target for n in self.ids):
                return time.monotonic() - started
            time.sleep(0.01)
        raise Failure(f"replica {target} does not lead after {timeout} s: "
                      f"{[self.state(n) for n in self.ids]}")

    def log_tail(self, n, lines=15):
        try:
            return (self.directory / f"{n}.log").read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return []


class Client:
    """A client of the store, as a careful program would write one: it follows redirects to the
    leader, retries after a 503 or a broken connection, and numbers its writes (X-Client-Id,
    X-Sequence) so that a retry is never applied twice."""

    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.sequence = 0
        self.port = cluster.client_port(random.choice(cluster.ids))
        self.connection = None
        self.writes_applied = 0  # writes answered 200: each must bump the store's revision once
        self.retry_after = None  # the Retry-After header of the latest answer

    def call(self, method, key, body=None, headers=None, timeout=20, retry_unavailable=True):
        """Returns (status, ETag, body) of the first answer that is neither 307 nor 503; with
        retry_unavailable=False, of the first that is not 307 (the Retry-After header of the
        answer is then in self.retry_after)."""
        headers = dict(headers or {})
        if method in ("PUT", "DELETE"):
            self.sequence += 1
            headers.update({"X-Client-Id": self.name, "X-Sequence": str(self.sequence)})
        path = "/kv/" + urllib.parse.quote(key, safe="")
        deadline = time.monotonic() + timeout
        unavailable = 0
        while time.monotonic() < deadline:
            try:
                status, response, data = self._send(method, path, body, headers)
            except (OSError, http.client.HTTPException):
                self._try_next_server()  # this one is down, or closed an idle connection
                time.sleep(0.02)
                continue
            if status == 307:
                self._move_to(urllib.parse.urlsplit(response.getheader("Location")).port)
            elif status == 503 and retry_unavailable:
                time.sleep(0.05)  # Retry-After says 1 s; a test is in more of a hurry
                unavailable += 1
                if unavailable % 10 == 0:  # it may never know a leader: removed, say
                    self._try_next_server()
            else:
                if method != "GET" and status == 200:
                    self.writes_applied += 1
                self.retry_after = response.getheader("Retry-After")
                return status, response.getheader("ETag"), data
        raise Failure(f"{self.name}: {method} {key} got no answer in {timeout} s")

    def _send(self, method, path, body, headers):
        if self.connection is None:
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            self.connection.request(method, path, body=body, headers=headers)
            response = self.connection.getresponse()
            return response.status, response, response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise

    def _move_to(self, port):
        if port != self.port:
            self.close()
            self.port = port

    def _try_next_server(self):
        ports = [self.cluster.client_port(n) for n in self.cluster.ids]
        i = ports.index(self.port) if self.port in ports else -1  # or it left the cluster
        self._move_to(ports[(i + 1) % len(ports)])

    def close(self):
        if self.connection is not None:
            self.connection.close()
            self.connection = None


class Threads:
    """run(i) in WRITERS threads, i from 0. join() waits for them all and raises the first
    exception any of them raised; meanwhile `errors` holds what they raised, so that a wait can
    stop early. As a context manager they start on entry; on exit `stop` (an Event, if given)
    is set and they are joined, and an exception of the block itself goes before theirs."""

    def __init__(self, run, stop=None):
        self.stop = stop
        self.errors = []
        self.threads = [threading.Thread(target=self._run, args=(run, i)) for i in range(WRITERS)]

    def _run(self, run, i):
        try:
            run(i)
        except Exception as error:  # reported by join()
            self.errors.append(error)

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def join(self):
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]

    def __enter__(self):
        return self.start()

    def __exit__(self, kind, value, traceback):
        if self.stop:
            self.stop.set()
        for thread in self.threads:
            thread.join()
        if kind is None and self.errors:
            raise self.errors[0]

    def wait_for(self, acknowledged, count, timeout, pause):
        """Waits until acknowledged() reaches `count`, or a thread has failed (join() raises it);
        fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while acknowledged() < count and not self.errors:
            check(time.monotonic() < deadline, f"only {acknowledged()} writes in {timeout} s")
            time.sleep(pause)


def numbered_writes(prefix, i, stop):
    """The keys and values thread i writes until `stop` is set: prefix-i-00000 and so on."""
    for j in range(100000):
        if stop.is_set():
            return
        yield f"{prefix}-{i}-{j:05}", f"{prefix}-{i}-{j}".encode()


class Writers:
    """WRITERS clients in threads, each with its own operations, run in order. A key always
    belongs to the same client, so the last acknowledged write of a key is its expected value."""

    def __init__(self, cluster, phase, operations, expected):
        self.clients = [Client(cluster, f"{phase}-writer-{i}") for i in range(WRITERS)]
        self.lists = [[] for _ in range(WRITERS)]
        for operation in operations:
            self.lists[hash(operation[1]) % WRITERS].append(operation)
        self.expected = expected
        self.acknowledged = 0
        self.lock = threading.Lock()
        self.threads = Threads(self._run)

    def start(self):
        self.threads.start()
        return self

    def join(self):
        try:
            self.threads.join()
        finally:
            for client in self.clients:
                client.close()

    def _run(self, i):
        for method, key, value in self.lists[i]:
            status, _, _ = self.clients[i].call(method, key, value)
            check(status == 200, f"{method} {key}: status {status}")
            with self.lock:
                self.expected[key] = value if method == "PUT" else None
                self.acknowledged += 1

    def wait_until(self, acknowledged, timeout=30):
        self.threads.wait_for(lambda: self.acknowledged, acknowledged, timeout, 0.01)

    def writes_applied(self):
        return sum(client.writes_applied for client in self.clients)


def check_compare_and_set(client):
    status, tag, _ = client.call("PUT", "cas", b"one")
    check(status == 200 and tag, f"PUT cas: {status}")
    status, new_tag, _ = client.call("PUT", "cas", b"two", {"If-Match": tag})
    check(status == 200 and new_tag != tag, f"PUT cas If-Match current: {status}")
    status, _, _ = client.call("PUT", "cas", b"three", {"If-Match": tag})
    check(status == 412, f"PUT cas If-Match stale: {status}, wanted 412")
    status, _, _ = client.call("PUT", "cas", b"four", {"If-None-Match": "*"})
    check(status == 412, f"PUT cas If-None-Match on a present key: {status}, wanted 412")
    status, _, data = client.call("GET", "cas")
    check((status, data) == (200, b"two"), f"GET cas: {status} {data!r}, wanted two")
    status, _, _ = client.call("DELETE", "cas", None, {"If-Match": new_tag})
    check(status == 200, f"DELETE cas If-Match current: {status}")
    status, _, _ = client.call("PUT", "cas", b"five", {"If-None-Match": "*"})
    check(status == 200, f"PUT cas If-None-Match on an absent key: {status}")


def check_at_most_once(cluster, client, other):
    """A retry of a write (same client, same sequence) returns the first answer and changes
    nothing, even after another client changed the key; an older sequence is refused."""
    status, tag, _ = client.call("PUT", "once", b"first")
    check(status == 200, f"PUT once: {status}")
    check(other.call("PUT", "once", b"second")[0] == 200, "PUT once by another client")
    retry = {"X-Client-Id": client.name, "X-Sequence": str(client.sequence)}
    for _ in range(2):
        status, retry_tag, _ = raw_call(cluster, "PUT", "/kv/once", b"first again", retry)
        check((status, retry_tag) == (200, tag), f"retried PUT once: {status} {retry_tag}")
    check(client.call("GET", "once")[2] == b"second", "a retried write was applied again")
    client.call("PUT", "once-later", b"x")  # sequence + 1
    stale = {"X-Client-Id": client.name, "X-Sequence": str(client.sequence - 1)}
    status, _, _ = raw_call(cluster, "PUT", "/kv/once", b"stale", stale)
    check(status == 409, f"a write with an older sequence: {status}, wanted 409")


def raw_call(cluster, method, path, body=None, headers=None):
    """One request to the leader, following redirects by hand, with no retry of its own."""
    port = cluster.client_port(cluster.wait_for_leader())
    for _ in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        data = response.read()
        connection.close()
        if response.status != 307:
            return response.status, response.getheader("ETag"), data
        port = urllib.parse.urlsplit(response.getheader("Location")).port
    raise Failure(f"{method} {path}: too many redirects")


def send_raw(port, data, wait=2.0, http_reply=False):
    """Sends bytes on a new connection; returns what came back before the server closed it (or,
    with http_reply, once an HTTP reply's head has come), or None if nothing of the kind happened
    within `wait` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        try:
            connection.sendall(data)
        except OSError:
            return b""  # closed while we were still sending: that is a refusal too
        received = b""
        try:
            while True:
                chunk = connection.recv(65536)
                if not chunk:
                    return received
                received += chunk
                if http_reply and b"\r\n\r\n" in received:
                    return received
        except ConnectionResetError:
            return received
        except socket.timeout:
            return None


def check_bad_raft_input(cluster):
    """Garbage on a Raft port closes that connection; the replica goes on with its peers."""
    junk = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # "GET " read as a length: 542 MB, over the limit
        struct.pack("<I", 0xFFFFFFFF) + b"x" * 100,  # the largest length
        struct.pack("<I", 12) + bytes(range(200, 212)),  # a frame that does not decode
        struct.pack("<I", 3) + b"\x01\x00\x00",  # a message cut short
        struct.pack("<I", 0),  # an empty frame
    ]
    for n in IDS:
        for data in junk:
            check(send_raw(cluster.raft_port(n), data) is not None,
                  f"replica {n} kept a Raft connection open after {data[:12]!r}")
    # More idle connections than a replica accepts: the oldest are closed, the cluster works on.
    leader = cluster.wait_for_leader()
    idle = [socket.create_connection(("127.0.0.1", cluster.raft_port(n))) for n in IDS
            for _ in range(40)]
    client = Client(cluster, "after-raft-junk")
    for i in range(20):
        check(client.call("PUT", f"raft-junk-{i}", b"ok")[0] == 200, "a write under idle load")
    for connection in idle:
        connection.close()
    client.close()
    check(cluster.state(leader) is not None, f"replica {leader} stopped answering")
    return client.writes_applied


def check_bad_http_input(cluster):
    """Bad requests get an error status that says what was wrong (or a closed connection), and
    apply nothing; a value at the limit is taken whatever its content type. Returns the writes
    it made."""
    for n in IDS:
        port = cluster.client_port(n)
        answer = send_raw(port, b"\x00\xff\x13 garbage \x7f\r\n\r\n", http_reply=True)
        check(answer is not None and (answer == b"" or answer.startswith(b"HTTP/1.1 4")),
              f"replica {n} answered garbage with {answer[:40] if answer else answer!r}")
        if answer:
            reason = send_raw(port, b"\x00\xff\x13 garbage \x7f\r\n\r\n", wait=2)
            check(reason and b"malformed" in reason, f"replica {n}: garbage: {reason!r}")
        long_header = b"GET /kv/x HTTP/1.1\r\nX-Long: " + b"a" * 20000 + b"\r\n\r\n"
        answer = send_raw(port, long_header, http_reply=True)
        check(answer is not None and (answer == b"" or answer.startswith(b"HTTP/1.1 4")),
              f"replica {n} answered a 20 KB header with {answer[:40] if answer else answer!r}")
    # A body that stops coming: answered 400 once the server stops waiting (5 s), not applied.
    # It runs while the rest is checked.
    leader_port = cluster.client_port(cluster.wait_for_leader())
    stalled = {}
    stall = threading.Thread(target=lambda: stalled.setdefault("answer", send_raw(
        leader_port, b"PUT /kv/stalled HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc",
        wait=10, http_reply=True)))
    stall.start()
    form = {"Content-Type": "application/x-www-form-urlencoded"}  # what curl -d sends
    bad = [
        ("GET", "/nope", None, {}, 404),
        ("POST", "/kv/x", b"v", {}, 405),
        ("PATCH", "/kv/x", b"v", {}, 405),
        ("OPTIONS", "/kv/x", None, {}, 405),
        ("DELETE", "/debug/state", None, {}, 405),
        ("PUT", "/kv/x", b"v" * 65537, form, 413),
        ("PUT", "/kv/x", b"v" * 65537, {"Expect": "100-continue"}, 413),
        ("PUT", "/kv/x", b"v", {"Content-Type": "multipart/form-data; boundary=b"}, 415),
        ("PUT", "/kv/x", b"v", {"Content-Encoding": "gzip"}, 415),
        ("GET", "/kv/" + "k" * 70000, None, {}, 414),
        ("BREW", "/kv/x", None, {}, 400),
        ("PUT", "/kv/x", b"v", {"X-Client-Id": "c", "X-Sequence": "abc"}, 400),
        ("PUT", "/kv/x", b"v", {"X-Client-Id": "c"}, 400),
        ("PUT", "/kv/x", b"v", {"If-Match": '"not a number"'}, 400),
        ("PUT", "/kv/x", b"v", {"If-Match": '"1"', "If-None-Match": "*"}, 400),
        ("PUT", "/kv/" + "k" * 2000, b"v", {}, 400),
        ("PUT", "/kv/x", b"v" * 100000, {}, 413),
        ("POST", "/admin/transfer", None, {}, 400),
        ("POST", "/admin/transfer?to=", None, {}, 400),
        ("POST", "/admin/transfer?to=abc", None, {}, 400),
        ("POST", "/admin/transfer?to=-1", None, {}, 400),
        ("POST", "/admin/transfer?to=0", None, {}, 400),
        ("POST", "/admin/transfer?to=4", None, {}, 400),
        ("POST", "/admin/transfer?to=2%20", None, {}, 400),
        ("POST", "/admin/transfer?to=" + "9" * 25, None, {}, 400),
        ("GET", "/admin/transfer?to=1", None, {}, 405),
        ("PUT", "/admin/transfer?to=1", b"", {}, 405),
    ]
    for method, path, body, headers, wanted in bad:
        try:
            status, _, answer = raw_call(cluster, method, path, body, headers)
        except (OSError, http.client.HTTPException):
            status, answer = "closed", b""  # allowed for a body too large, refused unread
        check(status == wanted or (wanted == 413 and status == "closed"),
              f"{method} {path[:20]}: status {status}, wanted {wanted}")
        check(status == "closed" or len(answer.strip()) > 10,
              f"{method} {path[:20]}: {status} does not say what was wrong: {answer!r}")
    # The value limit is the same whatever the content type; If-None-Match names its failure.
    value = b"v" * 65536
    check(raw_call(cluster, "PUT", "/kv/form-value", value, form)[0] == 200, "a 64 KiB form PUT")
    check(raw_call(cluster, "GET", "/kv/form-value")[2] == value, "a 64 KiB form value read back")
    status, _, answer = raw_call(cluster, "PUT", "/kv/form-value", b"x", {"If-None-Match": "*"})
    check(status == 412 and b"exists" in answer, f"If-None-Match: * on a key: {status} {answer!r}")
    # Bodies without a usable length: refused, and nothing applied.
    head = b"PUT /kv/%s HTTP/1.1\r\nHost: x\r\n"
    raw = [
        (b"no-length", b"\r\n", b"HTTP/1.1 411"),
        (b"bad-length", b"Content-Length: abc\r\n\r\nhello", b"HTTP/1.1 400"),
        (b"two-lengths", b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nab", b"HTTP/1.1 400"),
        (b"chunked", b"Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n", b"HTTP/1.1 411"),
        (b"cut-short", b"Content-Length: 10\r\n\r\nabc", None),  # then the client closes
    ]
    for key, rest, wanted in raw:
        if wanted:
            answer = send_raw(leader_port, head % key + rest, wait=3)  # closed after 1 s idle
            check(answer and answer.startswith(wanted) and answer.split(b"\r\n\r\n", 1)[1],
                  f"PUT /kv/{key.decode()}: {answer!r}, wanted {wanted!r} and a reason")
        else:
            with socket.create_connection(("127.0.0.1", leader_port), timeout=3) as connection:
                connection.sendall(head % key + rest)
    stall.join()
    answer = stalled.get("answer")
    check(answer and answer.startswith(b"HTTP/1.1 400"), f"a stalled body: {answer!r}")
    for key in [key for key, _, _ in raw] + [b"stalled"]:
        status = raw_call(cluster, "GET", "/kv/" + key.decode())[0]
        check(status == 404, f"PUT /kv/{key.decode()} was refused, but the key exists ({status})")
    check_transfer_requests(cluster)
    return 1  # the 64 KiB form value


def direct_call(cluster, n, method, path, body=None, headers=None):
    """One request to replica n, with no redirect followed and no retry."""
    connection = http.client.HTTPConnection("127.0.0.1", cluster.client_port(n), timeout=5)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response, response.read()
    finally:
        connection.close()


def check_transfer_requests(cluster):
    """Bad input is refused by any replica (400, before any redirect); a good request on a
    follower is redirected to the leader (and not acted upon); on the leader, a transfer to
    itself is answered 200 and changes nothing."""
    leader = cluster.wait_for_leader()
    term = cluster.state(leader)["term"]
    for n in IDS:
        status, _, body = direct_call(cluster, n, "POST", "/admin/transfer?to=x")
        check(status == 400 and b"1, 2, 3" in body,
              f"replica {n}: POST /admin/transfer?to=x: {status} {body!r}, wanted 400")
        if n != leader:
            status, response, body = direct_call(cluster, n, "POST", f"/admin/transfer?to={n}")
            location = urllib.parse.urlsplit(response.getheader("Location") or "")
            check(status == 307 and location.port == cluster.client_port(leader)
                  and location.path == "/admin/transfer" and location.query == f"to={n}",
                  f"replica {n}: POST /admin/transfer?to={n} on a follower: {status} "
                  f"{response.getheader('Location')}, wanted 307 to the leader, {leader}")
    status, _, body = direct_call(cluster, leader, "POST", f"/admin/transfer?to={leader}")
    check(status == 200 and b"leads already" in body,
          f"POST /admin/transfer?to={leader} on the leader itself: {status} {body!r}, wanted 200")
    after = cluster.state(leader)
    check(after["leader"] == leader and after["term"] == term,
          f"a transfer to the leader itself changed something: {after}, term {term} before")
    cluster.sh("transfer", 4, status=2)


def check_reads(cluster, expected):
    """GETs add nothing to the Raft log; a follower redirects a GET to the leader; a GET answers
    the latest acknowledged write, whether its writer or another client asks, across many keys.
    Returns the number of writes applied."""
    leader = cluster.wait_for_leader()
    before = cluster.state(leader)
    reader = Client(cluster, "log-free-reader")
    present = sorted(key for key, value in expected.items() if value is not None)
    for key in random.sample(present, min(300, len(present))):
        status, _, data = reader.call("GET", key)
        check((status, data) == (200, expected[key]), f"GET {key}: {status} {data[:20]!r}")
    reader.close()
    after = cluster.state(leader)
    check(after["leader"] == leader and after["last_log_index"] == before["last_log_index"],
          f"300 GETs changed the leader's log: {before} before, {after} after")
    for n in IDS:
        if n != leader:
            status, response, _ = direct_call(cluster, n, "GET", "/kv/" + present[0])
            location = urllib.parse.urlsplit(response.getheader("Location") or "")
            check(status == 307 and location.port == cluster.client_port(leader),
                  f"GET on follower {n}: {status} {response.getheader('Location')}, wanted 307 "
                  f"to replica {leader}")

    # Each thread rewrites its own 50 keys; after every acknowledged PUT, the writer and a second
    # client (on a connection of its own, sent to a random replica each time) read the key.
    lock = threading.Lock()
    writers = [Client(cluster, f"ryw-writer-{i}") for i in range(WRITERS)]

    def run(i):
        other = Client(cluster, f"ryw-reader-{i}")
        try:
            for j in range(150):
                key, value = f"ryw-{i}-{j % 50:02}", f"ryw-{i}-{j}".encode()
                check(writers[i].call("PUT", key, value)[0] == 200, f"PUT {key}")
                with lock:
                    expected[key] = value
                status, _, data = writers[i].call("GET", key)
                check((status, data) == (200, value),
                      f"{writers[i].name} wrote {value!r} to {key}, then read {status} {data!r}")
                other._move_to(cluster.client_port(random.choice(cluster.ids)))
                status, _, data = other.call("GET", key)
                check((status, data) == (200, value),
                      f"{writers[i].name} wrote {value!r} to {key}; then {other.name} read "
                      f"{status} {data!r}")
        finally:
            other.close()
            writers[i].close()

    Threads(run).start().join()
    return sum(writer.writes_applied for writer in writers)


def check_transfer_under_load(cluster, expected, notes):
    """While WRITERS clients write new keys and read each one back, the leader is asked to hand
    its leadership to another replica. Returns the number of writes applied."""
    leader = cluster.wait_for_leader()
    target = random.choice([n for n in IDS if n != leader])
    stop = threading.Event()
    outcomes = []  # (key, value, "acked" | "not applied" | "unknown", status, body)
    lock = threading.Lock()
    acknowledged = [0]

    def run(i):
        writer = Client(cluster, f"transfer-writer-{i}")
        reader = Client(cluster, f"transfer-reader-{i}")
        try:
            for key, value in numbered_writes("xfer", i, stop):
                status, _, body = writer.call("PUT", key, value, retry_unavailable=False)
                if status == 200:
                    outcome = "acked"
                    with lock:
                        acknowledged[0] += 1
                else:
                    check(status == 503 and writer.retry_after and body.strip(),
                          f"PUT {key}: {status} {body!r} (Retry-After: {writer.retry_after}), "
                          "wanted 200, or 503 with Retry-After and a reason")
                    outcome = "not applied" if b"not applied" in body else "unknown"
                with lock:
                    outcomes.append((key, value, outcome, status, body))
                if outcome == "acked":
                    status, _, data = reader.call("GET", key)
                    check((status, data) == (200, value),
                          f"PUT {key} was acknowledged, then GET read {status} {data!r}")
        finally:
            writer.close()
            reader.close()

    threads = Threads(run, stop)

    def wait_for_writes(count, timeout=30):
        threads.wait_for(lambda: acknowledged[0], count, timeout, 0.005)

    with threads:
        wait_for_writes(200)
        asked_at = acknowledged[0]
        status, _, body = direct_call(cluster, leader, "POST", f"/admin/transfer?to={target}")
        check(status == 202, f"POST /admin/transfer?to={target} on the leader, replica {leader}: "
                             f"{status} {body!r}, wanted 202")
        took = cluster.wait_for_leader_to_be(target, timeout=2)
        changed_at = acknowledged[0]
        wait_for_writes(changed_at + 200)  # and the new leader goes on taking writes

    # Every acknowledged write is there; every write refused as "not applied" is not. A refusal
    # without that promise (no outcome in time, no leader known) may have been applied: the GET
    # tells, so that the count of applied writes stays exact.
    reader = Client(cluster, "transfer-checker")
    applied = 0
    for key, value, outcome, status, body in outcomes:
        got, _, data = reader.call("GET", key)
        if outcome == "acked" or (outcome == "unknown" and got == 200):
            check((got, data) == (200, value), f"PUT {key} ({outcome}): GET read {got} {data!r}")
            expected[key] = value
            applied += 1
        else:
            check(got == 404, f"PUT {key} was refused with {status} {body!r}, yet GET read "
                              f"{got} {data!r}")
            expected[key] = None
    reader.close()
    refused = [o for o in outcomes if o[2] != "acked"]
    not_applied = sum(o[2] == "not applied" for o in refused)
    reasons = sorted({o[4].decode(errors="replace").strip() for o in refused})
    notes.append(f"transferred the leadership from replica {leader} to {target} after {asked_at} "
                 f"writes; it led {took * 1000:.0f} ms later. {len(outcomes)} writes meanwhile: "
                 f"{applied} applied, {len(refused)} refused with 503 ({not_applied} of them "
                 f"'not applied', and they were not): {' / '.join(reasons) or 'none'}")
    # And back, with cluster.sh, on an idle cluster.
    out = cluster.sh("transfer", leader)
    check(f"replica {leader} leads now" in out, f"cluster.sh transfer {leader}: {out}")
    check(cluster.wait_for_leader() == leader, f"cluster.sh transfer {leader}: not the leader")
    return applied


def check_readable(cluster, expected):
    """Every acknowledged write is readable from the leader."""
    readers = [Client(cluster, f"reader-{i}") for i in range(WRITERS)]
    keys = sorted(expected)

    def read(i):
        try:
            for key in keys[i::WRITERS]:
                status, _, data = readers[i].call("GET", key)
                if expected[key] is None:
                    check(status == 404, f"GET {key}: {status} {data[:20]!r}, wanted 404")
                else:
                    check((status, data) == (200, expected[key]),
                          f"GET {key}: {status} {data[:20]!r}, wanted {expected[key]!r}")
        finally:
            readers[i].close()

    Threads(read).start().join()


MEMBERSHIP_PATHS = ("/admin/add-voter", "/admin/add-learner", "/admin/remove")


def check_membership_requests(cluster):
    """Bad input to the membership endpoints is refused by every replica (400, before any
    redirect; 405 for a wrong method); a good request on a follower is redirected to the leader
    and not acted upon; the leader refuses what it cannot do (409, with the reason); cluster.sh
    refuses bad ids. None of it changes the configuration or the log."""
    leader = cluster.wait_for_leader()
    before = cluster.state(leader)
    bad = ["", "?id=", "?id=abc", "?id=0", "?id=-1", "?id=+4", "?id=4%20", "?id=4x",
           "?id=" + "9" * 25, "?to=4", "?id=4&id=5"]
    for n in cluster.ids:
        for path in MEMBERSHIP_PATHS:
            for query in bad + ([] if path == "/admin/remove" else ["?id=1000"]):  # no address
                status, _, body = direct_call(cluster, n, "POST", path + query)
                check(status == 400 and body.strip(),
                      f"replica {n}: POST {path}{query}: {status} {body!r}, wanted 400")
            for method in ("GET", "PUT", "DELETE"):
                status, _, body = direct_call(cluster, n, method, path + "?id=4")
                check(status == 405 and b"POST" in body,
                      f"replica {n}: {method} {path}: {status} {body!r}, wanted 405")
        for method in ("POST", "PUT", "DELETE"):
            status, _, _ = direct_call(cluster, n, method, "/admin/configuration")
            check(status == 405, f"replica {n}: {method} /admin/configuration: {status}")
        status, _, body = direct_call(cluster, n, "GET", "/admin/configuration")
        check(status == 200 and json.loads(body) == {"id": n, "leader": leader,
                                                     "voters": [1, 2, 3], "learners": []},
              f"replica {n}: GET /admin/configuration: {status} {body!r}")
        if n != leader:
            for path in MEMBERSHIP_PATHS:
                status, response, _ = direct_call(cluster, n, "POST", path + "?id=4")
                location = urllib.parse.urlsplit(response.getheader("Location") or "")
                check(status == 307 and location.port == cluster.client_port(leader)
                      and (location.path, location.query) == (path, "id=4"),
                      f"replica {n}: POST {path}?id=4 on a follower: {status} "
                      f"{response.getheader('Location')}, wanted 307 to the leader, {leader}")
    follower = next(n for n in cluster.ids if n != leader)
    for path, replica, reason in [("/admin/add-voter", follower, b"is a voter already"),
                                  ("/admin/add-learner", follower, b"is a voter already"),
                                  ("/admin/remove", 7, b"is not a member")]:
        status, _, body = direct_call(cluster, leader, "POST", f"{path}?id={replica}")
        check(status == 409 and reason in body,
              f"POST {path}?id={replica} on the leader: {status} {body!r}, wanted 409 {reason}")
    for arguments, status, message in [(("add", "x"), 2, "a number"),
                                       (("add", 0), 2, "a number"),
                                       (("add", 1000), 2, "a number"),
                                       (("remove", "2x"), 2, "a number"),
                                       (("remove", 7), 1, "replica 7 is not a member")]:
        done = subprocess.run([str(CLUSTER_SH), *map(str, arguments)], env=cluster.env,
                              capture_output=True, text=True, timeout=30)
        check(done.returncode == status and message in done.stdout + done.stderr,
              f"cluster.sh {' '.join(map(str, arguments))}: exit {done.returncode}, wanted "
              f"{status} and '{message}': {done.stdout} {done.stderr}")
    after = cluster.state(leader)
    check((after["leader"], after["term"], after["last_log_index"], after["voters"])
          == (leader, before["term"], before["last_log_index"], [1, 2, 3]),
          f"refused membership requests changed something: {before} before, {after} after")


def check_membership_changes(cluster, expected, notes):
    """While WRITERS clients write new keys, and read each one back: replica 5 becomes a learner
    before it even runs; `cluster.sh add 4` and `add 5` make 4 and 5 voters (3 to 5 voters);
    `cluster.sh add 6` and `cluster.sh remove` of the leader replace a replica; and a follower
    removed through HTTP but left running for 2 s disturbs no one (the leader and its term
    stay), before `cluster.sh remove` stops it. Every write is retried until acknowledged.
    Returns the writes applied.

    The reads matter: a learner is promoted once it has answered a heartbeat round that began
    after its catch-up round did, and raft::Replica begins rounds only when a heartbeat is due
    or a read() asks for one. Under writes alone, AppendEntries go to every peer at every poll,
    no heartbeat is ever due, and AddVoter of a learner that has caught up is refused after 10
    election timeouts (raft.cpp's problem, not the kv server's)."""
    stop = threading.Event()
    lock = threading.Lock()
    acknowledged = [0]
    clients = [Client(cluster, f"member-writer-{i}") for i in range(WRITERS)]

    def run(i):
        reader = Client(cluster, f"member-reader-{i}")
        try:
            for key, value in numbered_writes("member", i, stop):
                status, _, body = clients[i].call("PUT", key, value)
                check(status == 200, f"PUT {key}: {status} {body!r}")
                with lock:
                    expected[key] = value
                    acknowledged[0] += 1
                status, _, data = reader.call("GET", key)
                check((status, data) == (200, value),
                      f"PUT {key} was acknowledged, then GET read {status} {data!r}")
        finally:
            clients[i].close()
            reader.close()

    threads = Threads(run, stop)

    def wait_for_writes(more, timeout=20):
        threads.wait_for(lambda: acknowledged[0], acknowledged[0] + more, timeout, 0.005)

    def wait_for_configuration(voters, timeout=5):
        """Every replica of the cluster has `voters` and no learner."""
        deadline = time.monotonic() + timeout
        while True:
            states = {n: cluster.state(n) for n in cluster.ids}
            if all(s and (s["voters"], s["learners"]) == (voters, []) for s in states.values()):
                return
            check(time.monotonic() < deadline, f"wanted voters {voters} everywhere: {states}")
            time.sleep(0.02)

    def add(n):
        cluster.started.add(n)
        started = time.monotonic()
        out = cluster.sh("add", n)
        check(f"replica {n} is a voter" in out, f"cluster.sh add {n}: {out}")
        cluster.ids = sorted(cluster.ids + [n])
        return time.monotonic() - started

    with threads:
        wait_for_writes(100)
        # 3 -> 5: 5 is a learner before it runs (it cannot answer yet: no harm done), 4 joins.
        status, _, body = raw_call(cluster, "POST", "/admin/add-learner?id=5")
        check(status == 200 and b"replica 5 is a learner: voters 1, 2, 3; learners 5" in body,
              f"POST /admin/add-learner?id=5: {status} {body!r}")
        took = [add(4), add(5)]
        wait_for_configuration([1, 2, 3, 4, 5])
        wait_for_writes(100)
        notes.append(f"grew from 3 voters to 5 under {WRITERS} writers: cluster.sh add 4 took "
                     f"{took[0]:.2f} s, add 5 (a learner already) {took[1]:.2f} s")

        # A replacement: 6 joins, the leader (one of the first three) leaves.
        add(6)
        old = cluster.wait_for_leader()
        if old not in IDS:
            old = next(n for n in IDS if n in cluster.ids)
        started = time.monotonic()
        out = cluster.sh("remove", old)
        check(f"replica {old} is removed" in out and f"replica {old} (pid" in out,
              f"cluster.sh remove {old}: {out}")
        cluster.ids = [n for n in cluster.ids if n != old]
        voters = list(cluster.ids)
        new_leader = cluster.wait_for_leader()
        replaced_in = time.monotonic() - started
        wait_for_configuration(voters)
        wait_for_writes(100)

        # A follower removed but left running: it hears from no leader, and must not depose one.
        leader = cluster.wait_for_leader()
        term = cluster.state(leader)["term"]
        removed = next(n for n in cluster.ids if n != leader)
        status, _, body = raw_call(cluster, "POST", f"/admin/remove?id={removed}")
        check(status == 200 and f"replica {removed} is removed".encode() in body,
              f"POST /admin/remove?id={removed}: {status} {body!r}")
        cluster.ids = [n for n in cluster.ids if n != removed]
        time.sleep(2)
        wait_for_writes(50)
        states = {n: cluster.state(n) for n in cluster.ids}
        check(all(s and (s["leader"], s["term"]) == (leader, term) for s in states.values()),
              f"after replica {removed} was removed, and kept running for 2 s, the others "
              f"should still follow replica {leader} in term {term}: {states}")
        # cluster.sh stops a replica of its own that the leader says is no member.
        done = subprocess.run([str(CLUSTER_SH), "remove", str(removed)], env=cluster.env,
                              capture_output=True, text=True, timeout=30)
        check(done.returncode == 1 and "not a member" in done.stdout
              and f"replica {removed} (pid" in done.stdout,
              f"cluster.sh remove {removed}, removed already: exit {done.returncode}: "
              f"{done.stdout} {done.stderr}")
        wait_for_configuration(cluster.ids)
        wait_for_writes(100)
    notes.append(f"replaced replica {old}, the leader, by 6 in {replaced_in:.2f} s (replica "
                 f"{new_leader} leads now); removed {removed} and kept it running 2 s: replica "
                 f"{leader} led on in term {term}; {acknowledged[0]} writes meanwhile")
    for n in (old, removed):
        check(cluster.state(n) is None, f"replica {n} still answers after cluster.sh remove")
    return sum(client.writes_applied for client in clients)


def snapshots_since_start(cluster, n):
    """The indexes of the snapshots replica n restored since it last started, from its log."""
    lines = (cluster.directory / f"{n}.log").read_text(errors="replace").splitlines()
    start = max(i for i, line in enumerate(lines) if " raft on " in line)
    return [int(line.split("at index ")[1].split(":")[0]) for line in lines[start:]
            if "restored a snapshot at index" in line]


def check_logs_clean(cluster):
    for n in sorted(cluster.started):
        text = (cluster.directory / f"{n}.log").read_text(errors="replace")
        for sign in ("AddressSanitizer", "LeakSanitizer", "runtime error:", "fatal:"):
            check(sign not in text, f"replica {n}'s log reports '{sign}'")


def run(cluster, notes):
    cluster.sh("start")
    leader = cluster.wait_for_leader()
    expected = {}  # key -> value of its last acknowledged write, None if deleted

    # 1. 1,000 keys.
    writers = Writers(cluster, "first", [("PUT", f"key-{i:04}", f"one-{i}".encode())
                                         for i in range(1000)], expected)
    writers.start().join()
    writes = writers.writes_applied()

    # 2. GETs: no log entries, redirects from followers, read-your-writes across many keys.
    writes += check_reads(cluster, expected)

    # 3. Compare-and-set and at-most-once.
    alice, bob = Client(cluster, "alice"), Client(cluster, "bob")
    check_compare_and_set(alice)
    check_at_most_once(cluster, alice, bob)
    writes += alice.writes_applied + bob.writes_applied  # the retries, sent raw, apply nothing

    # 4. Bad input on every port.
    writes += check_bad_raft_input(cluster)
    writes += check_bad_http_input(cluster)

    # 5. A leader transfer under load.
    writes += check_transfer_under_load(cluster, expected, notes)

    # 6. SIGKILL the leader while clients write; restart it once 1,100 more writes are done, so
    # that the others have compacted their logs past it and it catches up by InstallSnapshot.
    operations = [("PUT", f"key-{i:04}", f"two-{i}".encode()) for i in range(1000, 2000)]
    operations += [("PUT", f"key-{i:04}", f"three-{i}".encode()) for i in range(0, 600)]
    operations += [("DELETE", f"key-{i:04}", None) for i in range(900, 1000)]
    random.shuffle(operations)
    writers = Writers(cluster, "second", operations, expected).start()
    writers.wait_until(100)
    leader = cluster.wait_for_leader()
    state = cluster.state(leader)
    check(state is not None, f"the leader, replica {leader}, does not answer")
    last_index = state["last_log_index"]
    cluster.sh("kill", leader)
    killed_at = writers.acknowledged
    writers.wait_until(killed_at + 1100)
    cluster.sh("restart", leader)
    restarted_at = writers.acknowledged
    writers.join()
    writes += writers.writes_applied()
    new_leader = cluster.wait_for_leader()
    notes.append(f"killed leader {leader} after {killed_at} of {len(operations)} writes, "
                 f"restarted it after {restarted_at}; replica {new_leader} leads now")

    # 7. Every acknowledged write is readable from the leader, and was applied exactly once.
    check_readable(cluster, expected)
    state = cluster.wait_for_convergence()
    check(state["revision"] == writes,
          f"the store counts {state['revision']} writes, the clients {writes} acknowledged")
    notes.append(f"{writes} writes and {len(expected)} reads acknowledged, all applied once")
    installed = snapshots_since_start(cluster, leader)
    check(installed and max(installed) > last_index,
          f"replica {leader} did not catch up through a snapshot past its index {last_index} "
          f"(its snapshots since its restart: {installed})")
    notes.append(f"replica {leader} was at index {last_index} and caught up through a snapshot "
                 f"at index {max(installed)}")

    # 8. Membership: bad requests; then, under writes, from 3 voters to 5 and a replacement.
    check_membership_requests(cluster)
    writes += check_membership_changes(cluster, expected, notes)
    check_readable(cluster, expected)
    state = cluster.wait_for_convergence()
    check(state["revision"] == writes,
          f"the store counts {state['revision']} writes, the clients {writes} acknowledged")
    notes.append(f"{writes} writes, all applied once and on each of replicas {cluster.ids}")

    # 9. Restart everything from the data directories: the first replicas and those that joined
    # take their membership from there.
    cluster.sh("stop")
    cluster.sh("start")
    cluster.wait_for_leader()
    deadline = time.monotonic() + 20
    while True:
        after = cluster.wait_for_convergence()
        if after["keys"] == state["keys"] and after["digest"] == state["digest"]:
            break
        check(time.monotonic() < deadline, f"after a restart: {after}, before: {state}")
        time.sleep(0.1)
    check(after["voters"] == cluster.ids and after["learners"] == [],
          f"after a restart, the configuration is {after}; wanted voters {cluster.ids}")
    notes.append(f"{after['keys']} keys, digest {after['digest']} on all replicas before and "
                 "after a full restart")
    cluster.sh("stop")
    check_logs_clean(cluster)


def main():
    server = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "build" / "kv-server").resolve()
    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="kv-e2e-"))
    cluster = Cluster(server, free_base_port(), directory)
    notes = []

    def out_of_time(*_):
        raise Failure(f"the test took more than {TIME_LIMIT} s")

    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(TIME_LIMIT)
    try:
        check(server.exists(), f"{server} is missing: run 'make kv'")
        run(cluster, notes)
    except Exception as error:
        signal.alarm(0)
        for n in sorted(cluster.started):
            print(f"--- the end of replica {n}'s log ({directory / f'{n}.log'}):")
            print("\n".join(cluster.log_tail(n)))
        try:
            cluster.sh("stop")
        except Exception:
            pass
        print(f"kv e2e: FAILED after {time.monotonic() - started:.1f} s: "
              f"{type(error).__name__}: {error}")
        return 1
    signal.alarm(0)
    shutil.rmtree(directory, ignore_errors=True)
    for note in notes:
        print(f"  {note}")
    print(f"kv e2e: passed in {time.monotonic() - started:.1f} s ({len(cluster.started)} servers "
          f"on ports {cluster.base + 1}-{cluster.base + 1000 + MAX_ID})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
