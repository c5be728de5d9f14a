"""``hefl keygen`` and CURVE key loading."""

from __future__ import annotations

import os
import stat

import pytest
import zmq
import zmq.auth

from hefl.cli import main
from hefl.errors import ConfigError
from hefl.transport import curve


def test_keygen_writes_a_usable_pair(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path / "keys"), "--name", "alice"]) == 0
    pub_f, sec_f = tmp_path / "keys" / "alice.key", tmp_path / "keys" / "alice.key_secret"
    assert stat.S_IMODE(os.stat(sec_f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(pub_f).st_mode) & 0o044  # public: readable by others
    public, secret = zmq.auth.load_certificate(sec_f)
    assert zmq.auth.load_certificate(pub_f) == (public, None)
    assert zmq.curve_public(secret) == public
    assert public.decode() in capsys.readouterr().out
    # loaders accept files and Z85 text
    assert curve.load_public_key(pub_f) == public
    assert curve.load_secret_key(sec_f) == secret
    assert curve.load_public_key(public.decode()) == public
    with pytest.raises(ConfigError, match="no secret key"):
        curve.load_secret_key(pub_f)


def test_keygen_refuses_to_overwrite(tmp_path):
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    assert main(["keygen", "--out", str(tmp_path)]) == 1
    assert main(["keygen", "--out", str(tmp_path), "--force"]) == 0


def test_bad_keys():
    with pytest.raises(ConfigError):
        curve.load_public_key("x" * 40 + "y")
    with pytest.raises(ConfigError):
        curve.load_public_key("~" * 40)  # not Z85
