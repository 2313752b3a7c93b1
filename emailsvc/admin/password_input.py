"""Reading a new password for the admin command line.

A password never comes from the command line itself (it would show in
`ps` and in shell history): it is read from a file, from standard input
when that is not a terminal, or typed twice at a prompt that does not echo.
"""
from __future__ import annotations


class PasswordInputError(Exception):
    """No usable password could be read; the message is for the operator."""


def _first_line(stream, source: str) -> str:
    """The first line of `stream` without its line ending."""
    try:
        line = stream.readline()
    except UnicodeDecodeError:
        raise PasswordInputError(f"the password in {source} is not valid UTF-8") from None
    if line == "":
        raise PasswordInputError(f"no password in {source}")
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith("\n"):
        return line[:-1]
    return line


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def read_password(io, password_file: str | None, address: str) -> str:
    """The new password of `address`, from the first source that applies.

    `--password-file FILE` (`-` is standard input), else standard input when
    it is not a terminal, else two prompts through `io.getpass` that must
    match.  Raises PasswordInputError; the password itself is never shown.
    """
    if password_file == "-":
        password = _from_stdin(io)
        source = "standard input"
    elif password_file is not None:
        source = password_file
        try:
            with open(password_file, encoding="utf-8") as handle:
                password = _first_line(handle, source)
        except OSError as error:
            raise PasswordInputError(
                f"cannot read the password file {password_file}: {error.strerror or error}"
            ) from None
    elif io.stdin is not None and not _is_terminal(io.stdin):
        password = _from_stdin(io)
        source = "standard input"
    else:
        source = "the prompt"
        try:
            password = io.getpass(f"New password for {address}: ")
            again = io.getpass("Repeat the password: ")
        except EOFError:
            raise PasswordInputError("no password given") from None
        if password != again:
            raise PasswordInputError("the passwords do not match")
    if not password:
        raise PasswordInputError(f"the password from {source} is empty")
    return password


def _from_stdin(io) -> str:
    if io.stdin is None:
        raise PasswordInputError("there is no standard input to read the password from")
    return _first_line(io.stdin, "standard input")
