"""The one exception type whose message is shown to the user as a single line."""


class MvlptError(Exception):
    """Bad input or an unmet precondition; str(err) is the whole message a user sees."""
