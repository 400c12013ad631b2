#!/usr/bin/env python3
"""Reads `go test -json` on stdin and prints what a person needs: the output
of every test that did not pass (whole), each package's result line, and
the slowest tests, so that the suite's time can be watched as it grows."""
import json
import sys

out = {}      # (package, test) -> output lines
results = []  # (elapsed, package, test, action)
for line in sys.stdin:
    try:
        ev = json.loads(line)
    except ValueError:
        print(line, end="")  # not test2json: build errors and the like
        continue
    key = (ev.get("Package", ""), ev.get("Test"))
    act = ev.get("Action")
    if act == "build-output":  # compiler errors
        print(ev.get("Output", ""), end="")
    elif act == "output":
        if key[1] is None:
            text = ev.get("Output", "")
            if text.startswith(("ok ", "FAIL", "---", "panic")) or "[no test files]" in text:
                print(text, end="")
        else:
            out.setdefault(key, []).append(ev.get("Output", ""))
    elif act in ("pass", "fail", "skip") and key[1] is not None:
        if act != "pass":
            print("".join(out.get(key, [])), end="")
        results.append((ev.get("Elapsed", 0.0), key[0], key[1], act))
        out.pop(key, None)
    sys.stdout.flush()

# Tests that never ended (a timeout, a crash of the test binary).
for (pkg, name), lines in out.items():
    print(f"=== {name} ({pkg}) did not end; its output:")
    print("".join(lines), end="")

top = sorted((r for r in results if "/" not in r[2]), reverse=True)[:20]
if top:
    print("\nslowest tests (seconds, wall time; parallel tests overlap):")
    for el, pkg, name, act in top:
        print(f"  {el:8.1f}  {name}  ({pkg.rsplit('/', 1)[-1]}{'' if act == 'pass' else ', ' + act.upper()})")
