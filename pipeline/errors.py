"""The one exception type whose message is shown to the user as a single line."""


class MvlptError(Exception):
    """Bad input or an unmet precondition; str(err) is the whole message a user sees."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error's message, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
