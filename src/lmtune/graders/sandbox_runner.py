"""Runs inside the sandbox (system Python, -I -S): reads {"source", "cases"} on stdin, writes the scores.

Not imported by lmtune: lmtune.graders.sandbox binds this file into the sandbox and runs it. The
user's prints go to stderr (a size-limited file); the result goes to the saved stdout.
"""

import errno
import json
import math
import os
import sys

# Errors the sandbox causes on purpose, named as the limit that caused them.
LIMITS = {
    errno.ENOENT: "the file is not visible in the sandbox (only /usr, read-only, and /tmp exist)",
    errno.EACCES: "the file is not accessible in the sandbox",
    errno.ECONNREFUSED: "network access is not allowed (no network in the sandbox)",
    errno.EROFS: "writing outside /tmp is not allowed (read-only file system)",
    errno.ENETUNREACH: "network access is not allowed (no network in the sandbox)",
    errno.EAFNOSUPPORT: "network access is not allowed (no network in the sandbox)",
    errno.EAGAIN: "process limit reached (no more processes may be started)",
    errno.EFBIG: "output limit exceeded (file size limit)",
    errno.ENOSPC: "temporary folder size limit exceeded",
    errno.EMFILE: "open file limit reached",
}


def describe(error):
    """One line naming what went wrong, the limit first when a limit caused it."""
    if isinstance(error, MemoryError):
        return "memory limit exceeded (MemoryError)"
    if type(error).__name__ == "gaierror":
        return f"network access is not allowed (no network in the sandbox): {error}"
    if isinstance(error, OSError) and error.errno in LIMITS:
        return f"{LIMITS[error.errno]}: {type(error).__name__}: {error}"
    return f"{type(error).__name__}: {error}"


def main():
    owner = os.getpid()
    result = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    data = json.loads(sys.stdin.read())
    out = {"scores": [], "error": None}
    try:
        namespace = {"__name__": "grader"}
        exec(compile(data["source"], "grader.py", "exec"), namespace)
        grade = namespace.get("grade")
        if not callable(grade):
            raise NameError("the source must define grade(sample, item)")
        for case in data["cases"]:
            try:
                value = grade(case["sample"], case["item"])
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise TypeError(f"grade() must return a finite number, got {value!r:.80}")
                out["scores"].append(float(value))
            except MemoryError as error:
                out = {"scores": [], "error": describe(error)}
                break
            except Exception as error:
                out["scores"].append({"error": describe(error)})
    except BaseException as error:  # noqa: BLE001 (a SystemExit or a SyntaxError of the source is the grader's)
        out = {"scores": [], "error": describe(error)}
    sys.stdout.flush()
    if os.getpid() != owner:  # a process the grader forked got here: only the grader's own process answers
        os._exit(0)
    result.write(json.dumps(out))
    result.flush()


main()
