"""Hiding passwords in text that people or other programs read: messages, logs and JSON.

One function, used wherever a URL or an error that may quote one is printed, so that a
password never shows, whether the URL parses or not (a malformed port, an unencoded `#`):
SQLAlchemy's own `render_as_string(hide_password=True)` needs a URL it can parse, and the
errors of a URL it cannot parse quote the URL whole. Standard library only: the CLI's error
path and the engine's log formatter import it.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# scheme://user:PASSWORD@host -- the password runs to the last `@` of the token (an
# unencoded `@` in a password is a common mistake, and all of it is secret).
_USERINFO = re.compile(r"(?P<pre>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@'\"]*:)[^\s'\"]+(?=@)")
# password=... in a query string or a libpq connection string.
_KEYWORD = re.compile(r"(?P<pre>\b(?:password|passwd|pwd)=)[^\s&;'\"]+", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every password in a URL or a `password=` setting replaced by `***`."""
    if "://" not in text and "=" not in text:
        return text  # the common case costs one scan
    text = _USERINFO.sub(lambda m: m["pre"] + MASK, text)
    return _KEYWORD.sub(lambda m: m["pre"] + MASK, text)


class RedactingFormatter(logging.Formatter):
    """A log formatter that hides passwords: an engine's log may quote a URL in an error."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
