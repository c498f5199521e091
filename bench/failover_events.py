#!/usr/bin/env python3
"""The moments of one failover, from a client and from the backup's log.

  failover_events.py probe HOST PORT SECONDS
      Waits for the first reply of a romulus-kvstore at HOST:PORT: connects
      (again and again while refused or closed), sends PING and waits for the
      answer; prints the wall-clock time (seconds since the epoch) at which it
      came, or exits 1 after SECONDS. Started just before a kill, aimed at the
      backup's --service, it measures when a client is served again.

  failover_events.py row BACKUP_LOG KILL_WALL FIRST_REPLY_WALL [LABEL]
      Prints one CSV line (no header; header: `failover_events.py header`) of
      the failover in BACKUP_LOG after a kill at KILL_WALL, in ms after the kill:
      detected   the backup saw the stream end ("stream ended", or "primary
                 lost" when it judged at once, or "primary handed over")
      takeover   it decided to take over ("TAKING OVER", --failover-timeout after
                 the last contact)
      running    the guest runs again on the backup ("guest running from epoch")
      reply      the first reply a client got from it (FIRST_REPLY_WALL)
      plus the backup's own "N ms from last contact to guest running".

Log lines start with the local time, HH:MM:SS.mmm; they are placed on the day of
the kill (or the next/previous one, whichever is within 12 hours). Standard
library only: used by bench/failover_timeline and by scripts/demo --plot.
"""
import datetime
import re
import socket
import sys
import time

HEADER = ("label,kill_wall,detected_ms,takeover_ms,running_ms,reply_ms,"
          "last_contact_to_running_ms")
EVENTS = [
    ("detected", r"stream ended: |primary lost: |primary handed over: "),
    ("takeover", r"TAKING OVER \("),
    ("running", r"guest running from epoch"),
]
STAMP = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d\d\d) ")


def probe(host, port, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.sendall(b"PING\n")
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(64)
                    if not chunk:
                        break
                    data += chunk
                if data.strip() == b"PONG":
                    return time.time()
        except OSError:
            pass
        time.sleep(0.002)
    return None


def wall_of(line, kill_wall):
    """The wall-clock time of a log line, placed next to the kill."""
    m = STAMP.match(line)
    if not m:
        return None
    h, mi, s, ms = (int(g) for g in m.groups())
    day = datetime.datetime.fromtimestamp(kill_wall).date()
    best = None
    for d in (day - datetime.timedelta(days=1), day, day + datetime.timedelta(days=1)):
        t = datetime.datetime.combine(d, datetime.time(h, mi, s, ms * 1000)).timestamp()
        if best is None or abs(t - kill_wall) < abs(best - kill_wall):
            best = t
    return best


def row(log_text, kill_wall, reply_wall, label=""):
    """The CSV fields of one failover (ms after the kill; empty if not seen)."""
    found = {}
    for line in log_text.splitlines():
        t = wall_of(line, kill_wall)
        if t is None or t < kill_wall - 0.002:  # log stamps are ms: allow the rounding
            continue
        for name, pattern in EVENTS:
            if name not in found and re.search(pattern, line):
                found[name] = t
    m = re.search(r"(\d+) ms from last contact with the primary to guest running", log_text)
    fields = [label, f"{kill_wall:.3f}"]
    for name, _ in EVENTS:
        fields.append(f"{(found[name] - kill_wall) * 1000:.1f}" if name in found else "")
    fields.append(f"{(reply_wall - kill_wall) * 1000:.1f}" if reply_wall else "")
    fields.append(m.group(1) if m else "")
    return ",".join(fields)


def main(argv):
    if len(argv) >= 2 and argv[1] == "header":
        print(HEADER)
        return 0
    if len(argv) == 5 and argv[1] == "probe":
        t = probe(argv[2], int(argv[3]), float(argv[4]))
        if t is None:
            print(f"failover_events: no reply from {argv[2]}:{argv[3]} within {argv[4]} s",
                  file=sys.stderr)
            return 1
        print(f"{t:.6f}")
        return 0
    if len(argv) in (5, 6) and argv[1] == "row":
        with open(argv[2], errors="replace") as f:
            text = f.read()
        reply = float(argv[4]) if argv[4] else None
        print(row(text, float(argv[3]), reply, argv[5] if len(argv) == 6 else ""))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
