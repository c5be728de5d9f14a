"""Homomorphic-encryption kits: batched Paillier, CKKS (TenSEAL) and a mock, on CPU or GPU.

>>> import numpy as np
>>> from hefl.he import paillier
>>> kit = paillier.keygen(2048)                  # SecretKit: keys + batched ops
>>> ca = kit.encrypt(np.array([1.5, -2.0]))      # CipherArray, one fixed-point scale
>>> kit.decrypt(ca + ca * 3)                     # doctest: +SKIP
array([ 6., -8.])
>>> pub = kit.public_kit()                       # only this is ever sent to a peer

See :mod:`hefl.he.base` for the array API and :mod:`hefl.he.encoding` for the encoders
and the slot :class:`Packer`.
"""

from . import ckks, mock, ou, paillier
from .base import AdditiveKit, CipherArray, PublicKit, SecretKit, concatenate
from .encoding import DEFAULT_FRAC_BITS, FixedPointEncoder, Packer
from .wire import cipher_from_wire, cipher_to_wire, load_public_kit, public_kit_to_wire

__all__ = [
    "paillier", "ckks", "mock", "ou", "keygen",
    "PublicKit", "SecretKit", "AdditiveKit", "CipherArray", "concatenate",
    "FixedPointEncoder", "Packer", "DEFAULT_FRAC_BITS",
    "cipher_to_wire", "cipher_from_wire", "public_kit_to_wire", "load_public_kit",
]


def keygen(scheme: str = "paillier", **kwargs) -> SecretKit:
    """Key generation by scheme name: ``"paillier"``, ``"ou"``, ``"ckks"`` or ``"mock"``."""
    if scheme == "paillier":
        return paillier.keygen(**kwargs)
    if scheme == "ckks":
        return ckks.keygen(**kwargs)
    if scheme == "mock":
        return mock.keygen(**kwargs)
    if scheme == "ou":
        return ou.keygen(**kwargs)
    from hefl.errors import ConfigError

    raise ConfigError(f"unknown HE scheme {scheme!r}; expected 'paillier', 'ckks', 'mock' or 'ou'")
