"""Password hashing: argon2id through argon2-cffi, never plain text."""
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash string (blocking: call from a thread)."""
    return _hasher.hash(password)


def verify_password(hashed: str, password: str) -> bool:
    """True when `password` matches `hashed` (blocking: call from a thread)."""
    try:
        return _hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(hashed: str) -> bool:
    """True when the hash uses weaker parameters than the current ones."""
    return _hasher.check_needs_rehash(hashed)
