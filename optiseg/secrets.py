"""One way to keep credentials out of every message, log, report and file: :func:`mask_credentials`."""

from __future__ import annotations

import re

# scheme://[user[:password]]@host... ; the password may hold '@', ':' or '/': the host part starts after the LAST
# '@' before the first '/', '?' or '#' that follows it (RFC 3986 forbids a raw '@' in the host).
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^\s'\"]*@)(?=[^\s@'\"]*(?:[/?#\s'\"]|$))")
_ENV_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (``${VAR}`` references are kept).

    >>> mask_credentials("postgresql://u:s3cr@t@db/x and mysql://:pw@h/y")
    'postgresql://u:***@db/x and mysql://:***@h/y'
    """

    def replace(match: re.Match) -> str:
        userinfo = match.group("userinfo")[:-1]
        user, colon, password = userinfo.partition(":")
        if not colon:
            return match.group(0)
        shown = password if _ENV_REFERENCE.match(password) else "***"
        return f"{match.group('scheme')}{user}:{shown}@"

    return _URL.sub(replace, str(text))


def has_password(text: str) -> bool:
    """Whether a URL in ``text`` carries a literal password (a ``${VAR}`` reference is not one)."""
    for match in _URL.finditer(str(text)):
        user, colon, password = match.group("userinfo")[:-1].partition(":")
        if colon and not _ENV_REFERENCE.match(password):
            return True
    return False
