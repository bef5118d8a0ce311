"""The functions a flame graph's samples fall in: py-spy's collapsed stacks (``bench.flame --out x.txt``) summed
per function, by own time (the stack's last frame) and by total time (anywhere in the stack, counted once a stack).

    python -m bench.flame_table /tmp/flame.txt [--top 40] [--under connectors/outbound]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

# py-spy writes a frame as "function (path/to/file.py:line)"; the line is dropped so a function is one row.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    found = _FRAME.match(frame.strip())
    if not found:
        return frame.strip()
    path = found["file"]
    for marker in ("site-packages/", "/work/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{found['function']} ({path})"


def summarise(lines: list[str], under: str = "") -> tuple[Counter, Counter, int]:
    own, total, samples = Counter(), Counter(), 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [frame_name(frame) for frame in stack.split(";")]
        if under and not any(under in frame for frame in frames):
            continue
        samples += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            total[frame] += int(count)
    return own, total, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stacks")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--under", default="", help="only the stacks with a frame whose name holds this")
    args = parser.parse_args()
    own, total, samples = summarise(Path(args.stacks).read_text().splitlines(), args.under)
    print(f"{samples} samples")
    for title, counter in (("own time", own), ("total time", total)):
        print(f"\n{title}:")
        for name, count in counter.most_common(args.top):
            print(f"  {100 * count / samples:5.1f} %  {name}")


if __name__ == "__main__":
    main()
