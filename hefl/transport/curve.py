"""CurveZMQ key pairs: generate, write (``hefl keygen``), load.

Keys are Z85 text (40 characters for 32 bytes), the format ZeroMQ and ``zmq.auth`` use.
Key files are ZeroMQ certificates (ZPL text, readable by ``zmq.auth.load_certificate``):
``NAME.key`` holds the public key (share it; the job lists it for the party), and
``NAME.key_secret`` holds both keys and is written with mode 0600.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85

from hefl.errors import ConfigError

__all__ = [
    "generate_keypair",
    "load_keypair",
    "load_public_key",
    "load_secret_key",
    "public_from_secret",
    "write_keypair",
]

_BANNER = "#   ****  Generated on {now} by hefl keygen  ****\n#   ZeroMQ CURVE {what} Certificate\n"


def generate_keypair() -> tuple[str, str]:
    """A fresh CURVE key pair ``(public, secret)``, both Z85 text."""
    if not zmq.has("curve"):
        raise ConfigError("this libzmq was built without CURVE support")
    public, secret = zmq.curve_keypair()
    return public.decode("ascii"), secret.decode("ascii")


def public_from_secret(secret: str | bytes) -> str:
    """The public key (Z85) belonging to a secret key (Z85)."""
    return zmq.curve_public(_z85(secret, "secret key")).decode("ascii")


def _cert_text(what: str, public: str, secret: str | None) -> str:
    text = _BANNER.format(now=datetime.datetime.now().isoformat(timespec="seconds"), what=what)
    if secret is not None:
        text += "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
    text += f'\nmetadata\ncurve\n    public-key = "{public}"\n'
    if secret is not None:
        text += f'    secret-key = "{secret}"\n'
    return text


def write_keypair(directory: str | os.PathLike, name: str = "party", *,
                  force: bool = False) -> tuple[Path, Path]:
    """Write a fresh key pair as ``DIR/NAME.key`` (public, 0644) and ``DIR/NAME.key_secret`` (0600).

    Parameters
    ----------
    directory : path
        Created if missing.
    name : str
        File stem.
    force : bool
        Overwrite existing files (otherwise ``FileExistsError``).

    Returns
    -------
    (public_path, secret_path)
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    public, secret = generate_keypair()
    pub_path, sec_path = out / f"{name}.key", out / f"{name}.key_secret"
    if not force:
        for p in (pub_path, sec_path):
            if p.exists():
                raise FileExistsError(f"{p} exists (use --force to overwrite)")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    # The secret file never exists with looser permissions, not even for a moment.
    if sec_path.exists():
        sec_path.unlink()
    fd = os.open(sec_path, flags | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(_cert_text("**Secret**", public, secret))
    os.chmod(sec_path, 0o600)  # in case the umask was odd
    fd = os.open(pub_path, flags, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(_cert_text("Public", public, None))
    os.chmod(pub_path, 0o644)
    return pub_path, sec_path


def _z85(value: str | bytes, what: str) -> bytes:
    raw = value.encode("ascii") if isinstance(value, str) else bytes(value)
    if len(raw) != 40:
        raise ConfigError(f"{what} must be 40 Z85 characters or an existing key file, "
                          f"got {len(raw)} characters")
    try:
        decoded = zmq.utils.z85.decode(raw)
    except (ValueError, KeyError, TypeError, IndexError):
        raise ConfigError(f"{what} is not valid Z85 text") from None
    if len(decoded) != 32:
        raise ConfigError(f"{what} does not decode to 32 bytes")
    return raw


def _looks_like_key(value: object) -> bool:
    """Key text rather than a file name: str/bytes that is not an existing path."""
    return isinstance(value, (str, bytes)) and not os.path.exists(
        os.fsdecode(value) if isinstance(value, bytes) else value
    )


def load_keypair(path: str | os.PathLike) -> tuple[bytes, bytes | None]:
    """``(public, secret or None)`` (Z85 bytes) from a certificate file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key file {os.fspath(path)!r}: {exc}") from None
    return _z85(public, f"public key in {os.fspath(path)}"), (
        _z85(secret, f"secret key in {os.fspath(path)}") if secret else None
    )


def load_public_key(value: str | bytes | os.PathLike) -> bytes:
    """A public key (Z85 bytes) from Z85 text or a certificate file path."""
    if _looks_like_key(value):
        return _z85(value, "public key")  # type: ignore[arg-type]
    return load_keypair(value)[0]  # type: ignore[arg-type]


def load_secret_key(value: str | bytes | os.PathLike) -> bytes:
    """A secret key (Z85 bytes) from Z85 text or a ``.key_secret`` file path."""
    if _looks_like_key(value):
        return _z85(value, "secret key")  # type: ignore[arg-type]
    secret = load_keypair(value)[1]  # type: ignore[arg-type]
    if secret is None:
        raise ConfigError(f"{os.fspath(value)!r} holds no secret key (use the .key_secret file)")
    return secret
