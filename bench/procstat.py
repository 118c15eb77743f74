"""CPU time and memory of a process and its descendants, from /proc (Linux only).

usage: procstat.py cpu PID          -> utime+stime of the tree, in ms
       procstat.py rss PID          -> VmRSS of the tree, in KiB
       procstat.py hwm PID          -> VmHWM (peak RSS) summed over the tree, in KiB
       procstat.py sample PID FILE  -> until killed, writes the highest tree VmRSS seen (KiB)
"""

import os
import sys
import time

TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # the command name is in parentheses and may contain spaces
    return text[text.rindex(")") + 2 :].split()


def tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid = int(stat_fields(name)[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ms(root):
    total = 0
    for pid in tree(root):
        try:
            f = stat_fields(pid)
            total += int(f[11]) + int(f[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total * TICK_MS


def status_kib(root, key):
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def main():
    what, pid = sys.argv[1], int(sys.argv[2])
    if what == "cpu":
        print(f"{cpu_ms(pid):.0f}")
    elif what == "rss":
        print(status_kib(pid, "VmRSS"))
    elif what == "hwm":
        print(status_kib(pid, "VmHWM"))
    elif what == "sample":
        peak = 0
        while os.path.exists(f"/proc/{pid}"):
            peak = max(peak, status_kib(pid, "VmRSS"))
            with open(sys.argv[3], "w") as f:
                f.write(f"{peak}\n")
            time.sleep(0.2)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
