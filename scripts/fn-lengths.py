#!/usr/bin/env python3
"""List Rust functions longer than a limit (default 80 lines) under the given folders.

Usage: python3 scripts/fn-lengths.py [--max N] DIR...
Exits 1 when any function is over the limit. Test modules (`mod tests`) are skipped.
A heuristic brace matcher: strings, chars and comments are blanked before counting.
"""
import re
import sys
from pathlib import Path

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")


def blank(src: str) -> str:
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", src[i:j])); i = j
        elif c == "r" and re.match(r'r#*"', src[i:i + 8]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'r(#*)"', src[i:])
            end = '"' + m.group(1)
            j = src.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", src[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            j += 1
            out.append(re.sub(r"[^\n]", " ", src[i:j])); i = j
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x..'", src[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\u\{[0-9a-fA-F]+\}'|'\\x..'", src[i:i + 12])
            out.append(" " * len(m.group(0))); i += len(m.group(0))
        else:
            out.append(c); i += 1
    return "".join(out)


def long_fns(path: Path, limit: int):
    text = blank(path.read_text())
    lines = text.split("\n")
    skip_until = -1
    for idx, line in enumerate(lines):
        if idx < skip_until:
            continue
        if re.match(r"^\s*mod tests\s*\{", line):
            skip_until = match_end(lines, idx) or len(lines)
            continue
        m = FN.match(line)
        if not m:
            continue
        end = match_end(lines, idx)
        if end is None:
            continue
        length = end - idx
        if length > limit:
            yield m.group(7), idx + 1, length


def match_end(lines, start):
    depth, opened = 0, False
    for j in range(start, len(lines)):
        for ch in lines[j]:
            if ch == "{":
                depth += 1; opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return j + 1
            elif ch == ";" and not opened and depth == 0:
                return None
    return None


def main():
    args = sys.argv[1:]
    limit = 80
    if args[:1] == ["--max"]:
        limit = int(args[1]); args = args[2:]
    found = 0
    for d in args:
        for p in sorted(Path(d).rglob("*.rs")):
            for name, line, length in long_fns(p, limit):
                print(f"{p}:{line}: fn {name} is {length} lines (limit {limit})")
                found += 1
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
