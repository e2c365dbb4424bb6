"""The one exception type users see: a problem with their input, stated with its fix."""


class SrDeployError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits with code 2.

    Messages name the problem and the fix, e.g. "checkpoint X is truncated (…); delete it and retry".
    """


COMMAND = "srdeploy"  # the console command (cli.py run from a checkout is the same command)


def command(arguments: str) -> str:
    """A command line for a hint, in the console command's words: ``command("export")`` → `srdeploy export`."""
    return f"`{COMMAND} {arguments}`"
