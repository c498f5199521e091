"""Mutual TLS on the replication link (issue 15): who may write a backup's image.

Every certificate is made for the test by the `openssl` command in a temp dir
(harness.Pki): the pair's CA, a second CA for impostors, an expired certificate
(notAfter a day in the past), one with the wrong name. The spec:

  - a TLS pair replicates and fails over under kill -9 as a plaintext pair does
    (test_kill's cycles, and test_output_commit's kvload cycles, run with TLS): every
    acknowledged epoch, and every acknowledged write, survives;
  - a backup whose primary stopped cleanly refuses, during the TLS handshake and
    with one log line naming the peer and the reason, a client without a certificate,
    one from another CA, an expired one and one with the wrong name; afterwards its
    committed epoch and checkpoint count are unchanged, it is still a backup, it
    started no guest and did not take over; the real primary connects right after;
  - a plaintext client on the TLS listener is refused at once and does not hold the
    primary slot: the real primary connects while it is still connected;
  - a peer whose certificate is valid but which then sends a bad hello, or nothing,
    is refused (one line) or closed after the handshake timeout, holds no slot,
    and leaves the image untouched (the stream's own hostile cases, after the
    handshake, are the same bytes to the same reader as in plaintext: the
    protocol tests and fuzz targets cover them);
  - a primary pointed at an impostor backup (valid TLS from another CA) refuses it
    and says so; the impostor never receives a checkpoint;
  - certificates rotate without a restart: after the files change and `romulus set
    tls reload` (or SIGHUP), a primary with the old CA's certificate is refused and
    one with the new CA's is accepted.

Nothing asserts on timing: waits are for log lines and states, with generous deadlines.
"""

import os
import shutil
import signal
import socket
import ssl
import time
import unittest

import harness
from harness import Cluster, Pki

import test_kill
import test_metrics
import test_output_commit
import test_witness

TLS_KILL_CYCLES = int(os.environ.get("ROMULUS_E2E_TLS_KILL_CYCLES", "12"))
TLS_KV_CYCLES = int(os.environ.get("ROMULUS_E2E_TLS_KV_CYCLES", "6"))
REFUSED_RE = r"refused connection from 127\.0\.0\.1:\d+: TLS: "
CONNECTED_RE = r"primary \S+ connected \(session [0-9a-f]+, TLS verified: /CN=([^)]+)\)"


@unittest.skipUnless(harness.have_openssl(), "the openssl command is not installed "
                     "(scripts/setup installs it)")
@harness.require_binaries("romulus", "counter")
class TlsTest(unittest.TestCase):

    # test_kill's cycle, run here with tls=True.
    run_cycle = test_kill.KillPrimaryTest.run_cycle
    _run_cycle = test_kill.KillPrimaryTest._run_cycle

    def test_tls_pair_never_loses_an_acknowledged_epoch_under_kill9(self):
        rng, _ = harness.seeded_random("test_tls_kill")
        self.precopy_acks = 0
        outcomes = {"took over": 0, "no takeover": 0}
        for i, (delay, kind, after) in enumerate(test_kill.plan(rng, TLS_KILL_CYCLES)):
            with self.subTest(cycle=i, kind=kind, delay_ms=round(delay * 1000), after=after):
                outcome = self.run_cycle(i, delay, kind, after, tls=True)
                harness.log(f"tls cycle {i:2d} {kind:7s} kill {delay * 1000:5.1f} ms after "
                            f"{after:5s}: {outcome}")
                outcomes["took over" if outcome.startswith("took") else "no takeover"] += 1
        harness.log(f"{TLS_KILL_CYCLES} TLS cycles: {outcomes}")

    # test_output_commit's kvload cycle, run here with tls=True (under eager, the default).
    COMMIT = test_output_commit.OutputCommitTest.COMMIT
    cluster = test_output_commit.OutputCommitTest.cluster
    kill_cycle = test_output_commit.OutputCommitTest.kill_cycle
    _kill_cycle = test_output_commit.OutputCommitTest._kill_cycle

    @harness.require_binaries("romulus", "kvstore", "kvload")
    def test_tls_pair_never_loses_an_acknowledged_write_under_kill9_and_load(self):
        rng, _ = harness.seeded_random("test_tls kvload kill")
        for i in range(TLS_KV_CYCLES):
            delay, seed = rng.uniform(0.05, 0.8), rng.randrange(1 << 31)
            pipeline = 1 if i % 2 == 0 else 16
            with self.subTest(cycle=i, delay_ms=round(delay * 1000), kvload_seed=seed):
                report = self.kill_cycle(i, delay, seed, pipeline, tls=True)
                harness.log(f"tls kvload cycle {i}: ops {report['ops']}, check {report['check']}")

    # -- a backup holding an image, its primary stopped cleanly

    def stopped_pair(self):
        """A TLS backup (named 'backup', requiring its peer to be 'primary') that synced
        from the real primary, which then stopped cleanly. Returns (cluster, backup,
        its status)."""
        c = Cluster(self)  # without tls=True: the TLS options are explicit here
        self.pki = Pki(os.path.join(c.dir, "pki"))
        backup = c.backup(harness.counter_guest(),
                          extra=self.pki.args("backup", peer="primary"))
        primary = self.start_primary(c, backup, "primary", self.pki.args("primary",
                                                                         peer="backup"))
        m = backup.wait_for(CONNECTED_RE)
        self.assertEqual(m.group(1), "primary")
        primary.wait_for(harness.IN_SYNC_RE)
        primary.terminate()
        primary.wait()
        backup.wait_for(r"primary shut down cleanly")
        status = backup.status()
        self.assertEqual(status["state"], "primary_stopped", backup.text())
        self.assertTrue(status["image_consistent"])
        return c, backup, status

    def start_primary(self, c, backup, name, tls_args):
        return c.primary(harness.counter_guest(), backup.listen_port, name=name, extra=tls_args)

    def assert_untouched(self, backup, before, context):
        """The image and the role are as they were: same committed epoch, same count of
        checkpoints, still a backup that started no guest and never took over."""
        after = backup.status()
        for key in ("last_committed_epoch", "checkpoints_committed", "streams"):
            self.assertEqual(after[key], before[key], f"{key} changed: {context}")
        self.assertEqual(after["role"], "backup", context)
        self.assertEqual(after["state"], "primary_stopped", context)
        self.assertEqual(after["connections_in_handshake"], 0, context)
        self.assertIsNone(backup.find(harness.TAKEOVER_RE), context)
        self.assertEqual(backup.guest_pids(), [], context)

    def refused_by_backup(self, c, backup, before, name, tls_args, reason_re):
        """Starts a primary with `tls_args`; the backup refuses it during the TLS
        handshake with one line naming it and matching `reason_re`; the attacker is
        stopped and the backup is checked untouched."""
        mark = backup.mark()
        attacker = self.start_primary(c, backup, name, tls_args)
        m = backup.wait_for(REFUSED_RE + reason_re, start=mark)
        # The attacker hears of it (as a refusal of its certificate, or a reset if the
        # backup's close overtook its alert) and says so.
        attacker.wait_for(r"backup \S+ (refused|unreachable): ")
        attacker.kill9()
        context = f"{name}: {m.group(0)}\n{backup.text()}\n{attacker.text()}"
        # The refusal leaves no half-open session behind.
        harness.wait_until(lambda: backup.status()["connections_in_handshake"] == 0, context)
        self.assert_untouched(backup, before, context)
        return m

    def test_refusals_leave_the_image_untouched_and_the_real_primary_connects(self):
        c, backup, before = self.stopped_pair()
        other = Pki(os.path.join(c.dir, "other-ca"), "Another CA")
        # A certificate from another CA (that trusts the backup's CA: the backup must
        # be the one to refuse).
        self.refused_by_backup(c, backup, before, "other-ca",
                               other.args("primary", peer="backup", ca=self.pki.ca),
                               r".*unable to get local issuer certificate")
        # Expired, from the right CA.
        self.refused_by_backup(c, backup, before, "expired",
                               self.pki.args("primary", peer="backup", days=-1),
                               r".*certificate has expired")
        # The right CA, the wrong name.
        self.refused_by_backup(c, backup, before, "wrong-name",
                               self.pki.args("mallory", peer="backup"),
                               r".*hostname mismatch.*CN=mallory")
        # No certificate at all (a TLS client that presents none).
        mark = backup.mark()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki.ca)
        ctx.check_hostname = False
        with socket.create_connection(("127.0.0.1", backup.listen_port)) as raw:
            try:
                with ctx.wrap_socket(raw) as tls:
                    tls.sendall(b"RMLS" + bytes(60))
                    tls.recv(1)  # the backup's alert, or the end of the connection
            except (ssl.SSLError, ConnectionError):
                pass
        backup.wait_for(REFUSED_RE + r".*(did not return a certificate|sent no certificate)",
                        start=mark)
        harness.wait_until(lambda: backup.status()["connections_in_handshake"] == 0,
                           backup.text())
        self.assert_untouched(backup, before, "no certificate\n" + backup.text())
        # One refusal line per attempt, each naming the peer: the attackers above may
        # have retried, so at least one per kind.
        self.assertGreaterEqual(backup.count(REFUSED_RE), 4, backup.text())
        # The real primary connects right after, and the backup follows it again.
        primary = self.start_primary(c, backup, "primary2",
                                     self.pki.args("primary", peer="backup"))
        primary.wait_for(harness.IN_SYNC_RE)
        harness.wait_until(lambda: backup.status()["state"] == "protecting", backup.text())

    def test_plaintext_client_is_refused_at_once_and_holds_no_slot(self):
        c, backup, before = self.stopped_pair()
        mark = backup.mark()
        raw = socket.create_connection(("127.0.0.1", backup.listen_port))
        self.addCleanup(raw.close)
        # A plaintext peer's first bytes (here: what a plaintext primary's Hello would
        # look like) end the TLS handshake at once.
        raw.sendall(b"RMLS" + bytes(60))
        backup.wait_for(REFUSED_RE + r".*does not speak TLS", start=mark)
        raw.settimeout(harness.DEADLINE)
        try:
            self.assertEqual(raw.recv(4096), b"", "the backup did not close the connection")
        except ConnectionResetError:
            pass
        self.assert_untouched(backup, before, backup.text())
        # Plaintext clients that say nothing, more than the backup holds without a
        # completed handshake (16), still connected while the real primary arrives: the
        # cap and the handshake timeout apply to TLS handshakes too, and none of them
        # holds the primary slot.
        for _ in range(20):
            idle = socket.create_connection(("127.0.0.1", backup.listen_port))
            self.addCleanup(idle.close)
        primary = self.start_primary(c, backup, "primary2",
                                     self.pki.args("primary", peer="backup"))
        primary.wait_for(harness.IN_SYNC_RE)
        self.assertIsNone(primary.find(r"another primary"), primary.text())
        # A plaintext romulus primary (allowed on loopback) is refused too.
        mark = backup.mark()
        plain = c.primary(harness.counter_guest(), backup.listen_port, name="plain")
        backup.wait_for(REFUSED_RE + r".*does not speak TLS", start=mark)
        plain.kill9()
        self.assertIsNone(backup.find(harness.TAKEOVER_RE), backup.text())
        self.assertTrue(primary.alive())

    def test_an_authenticated_peer_sending_garbage_or_nothing_holds_no_slot(self):
        """Bad input after a TLS handshake that succeeded (a peer with a valid
        certificate: a compromised or broken node) is refused like plaintext bad
        input: one line, the connection closed, the image untouched, and the real
        primary connects while such peers are still connected."""
        c, backup, before = self.stopped_pair()
        cert, key = self.pki.issue("primary")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.pki.ca)
        ctx.load_cert_chain(cert, key)
        ctx.check_hostname = False

        def tls_peer():
            raw = socket.create_connection(("127.0.0.1", backup.listen_port))
            tls = ctx.wrap_socket(raw)
            self.addCleanup(tls.close)
            return tls

        # A hello that is not one (the magic, then a length and a body of junk).
        mark = backup.mark()
        junk = tls_peer()
        junk.sendall(b"RMLS" + bytes([0xff] * 60))
        backup.wait_for(r"refused primary 127\.0\.0\.1:\d+: protocol version mismatch", start=mark)
        junk.settimeout(harness.DEADLINE)
        try:
            while junk.recv(4096):
                pass  # the backup's refusal, then the end of the connection
        except (ssl.SSLError, ConnectionError):
            pass
        # Peers that complete TLS and then say nothing: closed after the handshake
        # timeout, and they hold no slot meanwhile.
        silent = [tls_peer() for _ in range(3)]
        backup.wait_for(r"sent no complete handshake within \d+ ms; closing it", start=mark)
        for t in silent:
            t.settimeout(harness.DEADLINE)
            try:
                self.assertEqual(t.recv(4096), b"", "the backup left a silent peer connected")
            except (ssl.SSLError, ConnectionError):
                pass
        self.assert_untouched(backup, before, backup.text())
        more_silent = [tls_peer() for _ in range(3)]  # still connected as the primary comes
        self.assertEqual(len(more_silent), 3)
        primary = self.start_primary(c, backup, "primary2",
                                     self.pki.args("primary", peer="backup"))
        primary.wait_for(harness.IN_SYNC_RE)
        self.assertIsNone(backup.find(harness.TAKEOVER_RE), backup.text())

    def test_primary_refuses_an_impostor_backup(self):
        c = Cluster(self)
        pki = Pki(os.path.join(c.dir, "pki"))
        other = Pki(os.path.join(c.dir, "other-ca"), "Impostor CA")
        # The impostor's certificate is valid TLS from its own CA, and it would accept
        # the real primary (it trusts the pair's CA): only the primary's check stops it.
        impostor = c.backup(harness.counter_guest(), name="impostor",
                            extra=other.args("backup", ca=pki.ca))
        primary = c.primary(harness.counter_guest(), impostor.listen_port,
                            extra=pki.args("primary"))
        m = primary.wait_for(r"backup \S+ refused: not a trusted backup: TLS handshake with "
                             r"\S+ failed: unable to get local issuer certificate")
        harness.log("primary: " + m.group(0))
        s = impostor.status()
        self.assertFalse(s["image_consistent"], impostor.text())
        self.assertEqual(s["checkpoints_committed"], 0, impostor.text())
        self.assertEqual(s["streams"], 0, impostor.text())
        self.assertIsNone(primary.find(harness.IN_SYNC_RE), primary.text())

    def test_rotation_to_a_new_ca_without_restart(self):
        c = Cluster(self)
        old = Pki(os.path.join(c.dir, "old-ca"), "Old CA")
        new = Pki(os.path.join(c.dir, "new-ca"), "New CA")
        # The backup reads its files from fixed paths; rotation replaces their contents.
        live = os.path.join(c.dir, "live")
        os.makedirs(live)
        paths = {k: os.path.join(live, f"backup.{k}") for k in ("crt", "key", "ca")}

        def install(pki):
            cert, key = pki.issue("backup")
            for src, dst in ((cert, paths["crt"]), (key, paths["key"]), (pki.ca, paths["ca"])):
                shutil.copyfile(src, dst + ".tmp")
                os.replace(dst + ".tmp", dst)

        install(old)
        metrics = harness.free_port()
        backup = c.backup(harness.counter_guest(),
                          extra=["--tls-cert", paths["crt"], "--tls-key", paths["key"],
                                 "--tls-ca", paths["ca"], "--metrics", f"127.0.0.1:{metrics}"])
        p1 = self.start_primary(c, backup, "old-primary", old.args("primary"))
        p1.wait_for(harness.IN_SYNC_RE)
        p1.terminate()
        p1.wait()
        backup.wait_for(r"primary shut down cleanly")

        tls = backup.status()["tls"]
        self.assertEqual(tls["link"]["mode"], "mutual TLS 1.3", tls)
        self.assertIn("CN=backup", tls["link"]["certificate"])
        self.assertGreater(tls["link"]["not_after"], time.time(), tls)
        self.assertEqual((tls["reloads"], tls["reload_failures"]), (0, 0), tls)
        rc, out, err = harness.cli("status", "--control", backup.control_path)
        self.assertEqual(rc, 0, out + err)
        self.assertRegex(out, r"\n  link mutual TLS 1\.3 \(CN=backup, until \d{4}-\d\d-\d\d ")
        code, text = test_metrics.scrape(metrics)
        self.assertEqual(code, 200, text)
        self.assertEqual(test_metrics.value(
            text, 'romulus_tls_certificate_expiry_timestamp_seconds{link="replication"}'),
            tls["link"]["not_after"], text)
        install(new)
        rc, out, err = harness.cli("set", "tls", "reload", "--control", backup.control_path)
        self.assertEqual(rc, 0, out + err)
        self.assertIn("New CA", out)
        backup.wait_for(r"TLS files of the replication link re-read; "
                        r"new connections use .*New CA")
        before = backup.status()
        self.assertEqual(before["tls"]["reloads"], 1, before["tls"])
        # The old CA's primary is refused now (by the backup: this one trusts the new
        # CA already, so the refusal is not its own)...
        mark = backup.mark()
        p2 = self.start_primary(c, backup, "old-primary2", old.args("primary", ca=new.ca))
        backup.wait_for(REFUSED_RE + r".*unable to get local issuer certificate", start=mark)
        p2.kill9()
        harness.wait_until(lambda: backup.status()["connections_in_handshake"] == 0,
                           backup.text())
        self.assertEqual(backup.status()["last_committed_epoch"],
                         before["last_committed_epoch"])
        # ... and the new CA's is accepted.
        p3 = self.start_primary(c, backup, "new-primary", new.args("primary"))
        p3.wait_for(harness.IN_SYNC_RE)

        # SIGHUP re-reads too (and does not stop the node); a file that does not parse
        # keeps the certificates in use.
        with open(paths["key"], "w") as f:
            f.write("not a key\n")
        mark = backup.mark()
        os.kill(backup.pid, signal.SIGHUP)
        backup.wait_for(r"TLS reload of the replication link failed, "
                        r"keeping the certificates in use: --tls-key", start=mark)
        self.assertTrue(backup.alive())
        self.assertEqual(backup.status()["role"], "backup")
        self.assertEqual(backup.status()["tls"]["reload_failures"], 1)
        self.assertIn("New CA", backup.status()["tls"]["link"]["describe"])
        rc, out, err = harness.cli("set", "tls", "reload", "--control", backup.control_path)
        self.assertNotEqual(rc, 0)
        self.assertIn("--tls-key", err)


@unittest.skipUnless(shutil.which("etcd") and harness.have_openssl(),
                     "needs etcd (Debian: etcd-server) and the openssl command")
@harness.require_binaries("romulus", "kvstore")
class WitnessTlsTest(unittest.TestCase):
    """The witness over TLS: etcd with --client-cert-auth, the nodes on etcds://."""

    def test_a_tls_pair_with_an_etcds_witness_fails_over_by_winning_the_key(self):
        c = Cluster(self, tls=True)
        etcd = test_witness.Etcd(self, pki=c.pki)
        a_port, b_port = harness.free_port(), harness.free_port()
        kv = [harness.binary("kvstore")]
        w = etcd.witness_args("tls")
        # The witness's client certificate defaults to the link's (--tls-*), which
        # the same CA signed here.
        b = c.backup(kv, name="B", port=b_port, reprotect=a_port, extra=w)
        a = c.primary(kv, b_port, name="A", extra=w + ["--listen", f"127.0.0.1:{a_port}"])
        a.wait_for(harness.IN_SYNC_RE)
        for node in (a, b):
            node.wait_for(r"witness over TLS: this node's certificate CN=")
            self.assertIsNone(node.find(r"WARNING: the witness .* is plain HTTP"), node.text())
        self.assertEqual(a.status()["witness"]["state"], "owner", a.text())
        # The witness's certificate is in status and re-read with the link's.
        tls = a.status()["tls"]
        self.assertIn("CN=", tls["witness"]["certificate"])
        self.assertGreater(tls["witness"]["not_after"], time.time(), tls)
        rc, out, err = harness.cli("set", "tls", "reload", "--control", a.control_path)
        self.assertEqual(rc, 0, out + err)
        a.wait_for(r"TLS files of the witness re-read")
        a.kill9()
        b.wait_for(harness.TAKEOVER_RE)
        self.assertTrue(b.find(r"witness: candidate -> owner"), b.text())

    def test_a_node_whose_certificate_etcd_does_not_trust_cannot_reach_the_witness(self):
        c = Cluster(self)
        etcd = test_witness.Etcd(self, pki=Pki(os.path.join(c.dir, "etcd-ca"), "etcd CA"))
        other = Pki(os.path.join(c.dir, "other-ca"), "Other CA")
        cert, key = other.issue("A")
        p = c.primary([harness.binary("kvstore")], harness.free_port(),
                      extra=etcd.witness_args("x") + ["--witness-cert", cert, "--witness-key", key,
                                                      "--witness-ca", etcd.pki.ca])
        self.assertNotEqual(p.wait(), 0)
        errors = [line for s, line in p.lines if s == "err" and "cannot reach the witness" in line]
        self.assertEqual(len(errors), 1, p.text())
        self.assertFalse(p.find(r"guest pid \d+ attached"), "started a guest without the witness")


@harness.require_binaries("romulus", "counter")
class LinkPolicyTest(unittest.TestCase):
    """Secure by default: plaintext only on loopback, or with --insecure (warned)."""

    def run_romulus(self, *args):
        return harness.cli(*args, "--control", os.path.join(self.dir, "x.sock"), "--",
                           harness.binary("counter"), timeout=harness.DEADLINE)

    def setUp(self):
        c = Cluster(self)
        self.dir = c.dir

    def test_plaintext_backup_on_a_non_loopback_address_refuses_to_start(self):
        rc, out, err = self.run_romulus("backup", "--listen", "0.0.0.0:1")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--listen 0.0.0.0:1 is not a loopback address", err)
        self.assertIn("--insecure", err)

    def test_plaintext_primary_to_a_non_loopback_backup_refuses_to_start(self):
        rc, out, err = self.run_romulus("primary", "--backup", "192.0.2.1:7000")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("--backup 192.0.2.1:7000 is not a loopback address", err)

    def test_insecure_warns_at_start(self):
        port = harness.free_port()
        c = Cluster(self)
        node = c.proc("insecure", [harness.binary("romulus"), "backup", "--listen",
                                   f"0.0.0.0:{port}", "--insecure", "--memory", "32M",
                                   "--control", os.path.join(c.dir, "b.sock"), "--",
                                   *harness.counter_guest()])
        node.wait_for(r"WARNING: --insecure: the replication link \(--listen 0\.0\.0\.0:\d+\) "
                      r"is plaintext and unauthenticated")
        node.wait_for(r"backup listening on")

    def test_set_backup_to_a_non_loopback_address_without_tls_is_refused_and_the_primary_runs_on(self):
        c = Cluster(self)
        primary = c.primary(harness.counter_guest(), harness.free_port())
        primary.wait_for(r"unreachable")
        rc, out, err = harness.cli("set", "backup", "192.0.2.1:7000", "--control",
                                   primary.control_path)
        self.assertEqual(rc, 0, out + err)
        primary.wait_for(r"backup 192\.0\.2\.1:7000 refused: the backup 192\.0\.2\.1:7000 is "
                         r"not a loopback address")
        self.assertTrue(primary.alive(), primary.text())
        self.assertIsNotNone(primary.status(), primary.text())

    def test_loopback_plaintext_says_so(self):
        c = Cluster(self)
        backup = c.backup(harness.counter_guest())
        backup.wait_for(r"replication link: plaintext on loopback \(--listen 127\.0\.0\.1:\d+\)")

    @unittest.skipUnless(harness.have_openssl(), "needs the openssl command")
    def test_tls_options_come_from_the_config_file_too(self):
        c = Cluster(self)
        pki = Pki(os.path.join(c.dir, "pki"))
        cert, key = pki.issue("backup")
        conf = os.path.join(c.dir, "backup.conf")
        with open(conf, "w") as f:
            f.write(f"tls-cert = {cert}\ntls-key = {key}\ntls-ca = {pki.ca}\n"
                    f"tls-peer-name = primary\n")
        backup = c.backup(harness.counter_guest(), extra=["--config", conf])
        backup.wait_for(r"replication link: mutual TLS 1\.3; this node's certificate CN=backup .*"
                        r"the peer must be named 'primary'")
        primary = c.primary(harness.counter_guest(), backup.listen_port,
                            extra=pki.args("primary", peer="backup"))
        primary.wait_for(harness.IN_SYNC_RE)

    def test_tls_options_must_come_together(self):
        rc, out, err = self.run_romulus("backup", "--listen", "127.0.0.1:1", "--tls-cert", "x")
        self.assertEqual(rc, 2, out + err)
        self.assertIn("all three of --tls-cert, --tls-key and --tls-ca", err)

    def test_unreadable_certificate_is_one_line_naming_the_file(self):
        rc, out, err = self.run_romulus("backup", "--listen", "127.0.0.1:1", "--tls-cert",
                                        "/nonexistent.crt", "--tls-key", "/nonexistent.key",
                                        "--tls-ca", "/nonexistent-ca.crt")
        self.assertNotEqual(rc, 0, out + err)
        self.assertIn("--tls-cert '/nonexistent.crt': No such file or directory", err)


if __name__ == "__main__":
    unittest.main()
