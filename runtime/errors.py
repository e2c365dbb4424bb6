"""The one exception type users see: a problem with their input, stated with its fix."""
import errno


class SrDeployError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits with code 2.

    Messages name the problem and the fix, e.g. "checkpoint X is truncated (…); delete it and retry".
    """


COMMAND = "srdeploy"  # the console command (cli.py run from a checkout is the same command)


def command(arguments: str) -> str:
    """A command line for a hint, in the console command's words: ``command("export")`` → `srdeploy export`."""
    return f"`{COMMAND} {arguments}`"


_OS_FIXES = {errno.ENOSPC: "free some space or write elsewhere", errno.EDQUOT: "free some space or write elsewhere",
             errno.EFBIG: "the file grew past a size limit (ulimit -f, or the file system's): write elsewhere",
             errno.EACCES: "choose a folder you may write to, or change its permissions",
             errno.EPERM: "choose a folder you may write to, or change its permissions",
             errno.EROFS: "the file system is read-only: write elsewhere"}


def os_error_line(exc: OSError) -> str:
    """An operating-system error (a full disk, a read-only folder, a file size limit) as one line with its fix."""
    where = f" ({shown(str(exc.filename), 200)})" if exc.filename else ""
    fix = _OS_FIXES.get(exc.errno, "check the path and try again")
    return f"{exc.strerror or type(exc).__name__}{where}: {fix}"


def shown(name: str, limit: int = 60) -> str:
    """A name from inside a file, for a one-line message: control characters escaped, at most ``limit`` characters
    (a crafted file's names can hold newlines and run to any length; found by fuzzing)."""
    name = "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)
    return name if len(name) <= limit else f"{name[:limit - 1]}…"
