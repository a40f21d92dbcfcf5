"""Plays the visualizer on a pseudo-terminal, as a person would, and checks that it gives the
terminal back as it found it: after 'q', and after Ctrl-C (SIGINT) and SIGTERM.

usage: terminal.py BINARY
"""
import os
import pty
import select
import signal
import subprocess
import sys
import termios
import time


def read_for(fd, seconds):
    out = b""
    end = time.time() + seconds
    while time.time() < end:
        ready, _, _ = select.select([fd], [], [], 0.05)
        if ready:
            try:
                out += os.read(fd, 65536)
            except OSError:
                break
    return out


def play(binary, keys, stop):
    """Starts the visualizer on a new terminal, types `keys`, then stops it with `stop`: a key
    or a signal. Returns (problems, screen bytes)."""
    controller, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    child = subprocess.Popen([binary, "--speed", "20"], stdin=terminal, stdout=terminal,
                             stderr=terminal, start_new_session=True)
    out = read_for(controller, 1.0)
    for key in keys:
        os.write(controller, key)
        out += read_for(controller, 0.3)
    if isinstance(stop, bytes):
        os.write(controller, stop)
    else:
        child.send_signal(stop)
    try:
        status = child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        return ["it did not exit"], out
    out += read_for(controller, 0.3)
    after = termios.tcgetattr(terminal)
    os.close(terminal)
    os.close(controller)
    problems = []
    if status != 0:
        problems.append(f"exit status {status}")
    if after != before:
        problems.append("the terminal's settings were not restored")
    if b"\x1b[?1049h" not in out or b"\x1b[?1049l" not in out:
        problems.append("it did not enter and leave the alternate screen")
    if b"\x1b[?25h" not in out:
        problems.append("it did not show the cursor again")
    return problems, out


def main(binary):
    failures = 0
    cases = [
        ("q", [b"n3", b" ", b".", b"c1", b":partition 1,2 | 3\r"], b"q"),
        ("Ctrl-C", [b"t2", b"+", b"x13"], signal.SIGINT),
        ("SIGTERM", [b"i3", b"h"], signal.SIGTERM),
    ]
    for name, keys, stop in cases:
        problems, out = play(binary, keys, stop)
        if name == "q" and b"S1" not in out:
            problems.append("no frame was drawn")
        if name == "q" and b"crashes" not in out:
            problems.append("the key c1 did not crash S1")
        print(f"terminal, stopped by {name}: " + ("; ".join(problems) if problems else "restored"))
        failures += bool(problems)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
