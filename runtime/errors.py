"""The one exception type users see: a problem with their input, stated with its fix."""


class SrDeployError(Exception):
    """A user-facing error; the CLI prints its message on one line and exits with code 2.

    Messages name the problem and the fix, e.g. "checkpoint X is truncated (…); delete it and retry".
    """
