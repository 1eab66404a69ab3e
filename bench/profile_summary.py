"""Where the time went: a py-spy ``--format raw`` file (collapsed stacks) summed per function.

    python bench/profile_summary.py FILE
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _short(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["file"]
    for marker in ("site-packages/", "wt-perf/", "/lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{match['func']} ({path})"


def summarize(path: Path, top: int = 60, main_only: bool = True) -> str:
    """Inclusive and self share of samples per function. ``main_only``: the event loop's thread, where
    every request is served (worker threads waiting on their queues are sampled as busy by py-spy)."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread, frames = frames[0], [_short(f) for f in frames[1:]]
        if not frames or (main_only and "MainThread" not in thread):
            continue
        total += count
        threads[thread] += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    if not total:
        return "no samples\n"
    out = [f"{total} samples; by thread: " + ", ".join(f"{t} {c / total:.0%}" for t, c in threads.most_common(5)),
           "", "inclusive:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in inclusive.most_common(top)]
    out += ["", "self:"]
    out += [f"  {c / total:6.1%}  {f}" for f, c in own.most_common(top)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    print(summarize(Path(sys.argv[1])))
