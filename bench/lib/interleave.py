"""Times commands taken in turn (a, b, a, b, ...) rather than one after the other, so a machine
that gets slower or faster during the run (another process's burst, the page cache, a peer's
background cleanup) weighs on every command alike. Each run is a posix_spawn and a wait, with
stdout and stderr to /dev/null; the first WARMUP rounds are not counted.

    python3 interleave.py OUT.json RUNS WARMUP name=command [name=command ...]

OUT.json holds, per name, the median, mean, min and every time, in seconds (hyperfine's
field names). A command that fails stops the run with its name and status.
"""

import json
import os
import shlex
import statistics
import sys
import time


def main():
    out, runs, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cmds = []
    for spec in sys.argv[4:]:
        name, _, line = spec.partition("=")
        argv = shlex.split(line)
        if argv[0][0] != "/":
            argv[0] = next(
                os.path.join(d, argv[0])
                for d in os.environ["PATH"].split(":")
                if os.access(os.path.join(d, argv[0]), os.X_OK)
            )
        cmds.append((name, argv))
    quiet = [
        (os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
    ]
    times = {name: [] for name, _ in cmds}
    for i in range(warmup + runs):
        for name, argv in cmds:
            t0 = time.perf_counter()
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=quiet)
            _, status = os.waitpid(pid, 0)
            t1 = time.perf_counter()
            if status:
                sys.exit(f"{name} failed (wait status {status}): {shlex.join(argv)}")
            if i >= warmup:
                times[name].append(t1 - t0)
    results = [
        {
            "command": name,
            "median": statistics.median(t),
            "mean": statistics.fmean(t),
            "min": min(t),
            "times": t,
        }
        for name, t in times.items()
    ]
    with open(out, "w") as f:
        json.dump({"results": results}, f)


if __name__ == "__main__":
    main()
