"""Passwords in URLs (an Optuna storage such as postgresql://user:secret@host/db) are used, never written:
what raysearch stores, prints or submits carries the URL with its password replaced by ***."""

from .errors import UserInputError

MASK = "***"


def has_password(url: str) -> bool:
    return redact_url(url) != url


def refuse_password_in_job(url: str | None, command: str):
    """A job's command line is shown to every dashboard user: an Optuna storage URL with a password never goes in one."""
    if url and has_password(url):
        raise UserInputError("--optuna-storage", "a password in the URL would be shown in the job's command line on the dashboard",
                             "give the URL without it and let the database driver find it on the cluster "
                             f"(PGPASSWORD or ~/.pgpass for PostgreSQL, a MySQL option file), or {command} without --submit")


def redact_url(url: str) -> str:
    """scheme://user:password@host/path -> scheme://user:***@host/path; any other string is returned as it is."""
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")  # the last "@" ends the user info; a password may contain "@"
    if not at or ":" not in userinfo or userinfo.split(":", 1)[1] in ("", MASK):
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:{MASK}@{host}{slash}{path}"


def check_storage_for_resume(stored: str | None, given: str | None):
    """A resume of a search whose Optuna storage URL had a password needs the URL again (stored: the experiment's
    redacted URL; given: --optuna-storage of the resume)."""
    if given and redact_url(given) != stored:
        raise UserInputError("--optuna-storage", f"is not this experiment's Optuna storage ({stored or 'it has none'})",
                             "give the URL the search was launched with, or leave --optuna-storage out")
    if stored and f":{MASK}@" in stored and not given:
        raise UserInputError("--optuna-storage", f"the experiment's Optuna storage {stored} needs its password, which raysearch never stores",
                             "give the full URL again: raysearch resume PATH --optuna-storage URL")
