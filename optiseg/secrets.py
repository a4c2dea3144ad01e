"""One way to keep credentials out of every message, log, report and file: :func:`mask_credentials`.

Three kinds of secret are masked:

* the password of a URL (``scheme://user:PASSWORD@host``), however odd: an
  empty user, ``@``, ``:``, ``/`` or ``%40`` in the password, several URLs in
  one text;
* a ``password=`` / ``passwd=`` / ``pwd=`` pair, as in a URL's query string
  (``?password=...``) or a libpq DSN (``host=db password=...``);
* every value passed to :func:`remember_secret` (a password expanded from the
  environment), wherever it appears, even outside any URL.

``${VAR}`` references are kept: they are not secrets, and they say where the
secret comes from.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

MASK = "***"

# scheme://[userinfo@]... in free text. A password may hold '@', ':' or '/': the userinfo runs to the LAST '@'
# before the host, and the host (RFC 3986: no raw '@') runs to the next '/', '?', '#', quote, space or the end.
_URL_IN_TEXT = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s]*@)(?=[^\s@/?#'\"]*(?:[/?#\s'\"),;]|$))"
)
# The same for a text that is one URL (a config's `storage:` value): there the password may even hold spaces
# and quotes, and runs to the last '@' of the whole value.
_WHOLE_URL = re.compile(r"^(?P<scheme>\s*[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>.*@)(?=[^@]*$)", re.DOTALL)
_KEY_VALUE = re.compile(
    r"(?P<key>(?<![A-Za-z0-9_])(?:password|passwd|pwd)\s*=\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,'\")]+)",
    re.IGNORECASE,
)
_ENV_REFERENCE = re.compile(r"^['\"]?\$\{[A-Za-z_][A-Za-z0-9_]*\}['\"]?$")
_MIN_REMEMBERED = 3  # shorter values would mask ordinary words in every message

_remembered: set[str] = set()


def mask_credentials(text: object, *, url: bool = False) -> str:
    """``text`` with every credential in it replaced by ``***`` (``${VAR}`` references are kept).

    ``url=True`` says the whole text is one URL (e.g. a config's ``storage:``
    value), so its password may even hold spaces and quotes.

    >>> mask_credentials("postgresql://u:s3cr@t@db/x and mysql://:pw@h/y?password=pw2")
    'postgresql://u:***@db/x and mysql://:***@h/y?password=***'
    """
    masked = (_WHOLE_URL if url else _URL_IN_TEXT).sub(_mask_userinfo, str(text))
    masked = _KEY_VALUE.sub(_mask_value, masked)
    for secret in sorted(_remembered, key=len, reverse=True):
        masked = masked.replace(secret, MASK)
    return masked


def has_password(text: str, *, url: bool = True) -> bool:
    """Whether ``text`` (by default one URL) holds a literal password; a ``${VAR}`` reference is not one."""
    for match in (_WHOLE_URL if url else _URL_IN_TEXT).finditer(str(text)):
        _, colon, password = match.group("userinfo")[:-1].partition(":")
        if colon and not _ENV_REFERENCE.match(password):
            return True
    return any(not _ENV_REFERENCE.match(m.group("value")) for m in _KEY_VALUE.finditer(str(text)))


def password_spans(url: str) -> list[tuple[int, int]]:
    """Where the passwords of one URL sit in it: ``(start, end)`` of its userinfo's and of each ``password=`` value."""
    spans = []
    match = _WHOLE_URL.match(url)
    if match:
        start, end = match.span("userinfo")
        colon = url.find(":", start, end - 1)
        if colon >= 0:
            spans.append((colon + 1, end - 1))
    spans.extend(m.span("value") for m in _KEY_VALUE.finditer(url))
    return spans


def remember_secret(value: str | None) -> None:
    """Mask ``value`` (and its percent-encoded and decoded forms) in every later :func:`mask_credentials`."""
    if not value:
        return
    for form in {value, quote(value, safe=""), unquote(value)}:
        if len(form) >= _MIN_REMEMBERED:
            _remembered.add(form)


def _mask_userinfo(match: re.Match) -> str:
    user, colon, password = match.group("userinfo")[:-1].partition(":")
    if not colon:
        return match.group(0)
    shown = password if _ENV_REFERENCE.match(password) else MASK
    return f"{match.group('scheme')}{user}:{shown}@"


def _mask_value(match: re.Match) -> str:
    value = match.group("value")
    return match.group(0) if _ENV_REFERENCE.match(value) or value == MASK else f"{match.group('key')}{MASK}"
