"""The one exception type that loading raises for a user's mistake or a bad file."""


class LoadError(Exception):
    """A model, config or tokenizer could not be loaded.

    The message always names the file (or repo id) and what is wrong with it, so that a command-line
    script can print it as it is, without a traceback.
    """
