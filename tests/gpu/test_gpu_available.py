"""hefl.gpu without a GPU: available() is False and never raises; backend='gpu' says why."""

from __future__ import annotations

import builtins

import pytest

import hefl.gpu as hg
from hefl.errors import BackendUnavailableError
from hefl.gpu.reference import keygen_params


@pytest.fixture
def no_cupy(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "cupy" or name.startswith("cupy."):
            raise ImportError("No module named 'cupy' (test)")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    monkeypatch.delitem(__import__("sys").modules, "cupy", raising=False)
    monkeypatch.setattr(hg, "_PROBE", None)


def test_available_false_without_cupy(no_cupy):
    assert hg.available() is False
    assert "CuPy" in hg.unavailable_reason()
    info = hg.device_info()
    assert info["available"] is False and info["reason"]


def test_backend_raises_clear_error_without_cupy(no_cupy):
    from hefl.gpu.backend import GpuPaillierBackend

    params = keygen_params(256)
    with pytest.raises(BackendUnavailableError, match="CuPy"):
        GpuPaillierBackend(params)
    with pytest.raises(BackendUnavailableError, match="backend='gpu'"):
        hg.make_backend(params)


def test_disabled_by_env(monkeypatch):
    monkeypatch.setenv("HEFL_DISABLE_GPU", "1")
    monkeypatch.setattr(hg, "_PROBE", None)
    assert hg.available() is False
    assert "HEFL_DISABLE_GPU" in hg.unavailable_reason()


def test_available_never_raises(monkeypatch):
    def boom():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(hg, "_probe", boom)
    assert hg.available() is False
    assert "driver exploded" in hg.unavailable_reason()


def test_cli_without_a_gpu_says_why(no_cupy, capsys):
    from hefl.cli import main

    assert main(["gpu", "info"]) == 1
    assert '"available": false' in capsys.readouterr().out
    assert main(["gpu", "warmup", "--key-size", "256"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hefl gpu warmup:") and "CuPy" in err


@pytest.mark.parametrize("bad", ["100", "2050", "abc"])
def test_cli_warmup_refuses_a_bad_key_size(bad, capsys):
    from hefl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["gpu", "warmup", "--key-size", bad])
    assert exc.value.code == 2 and "key size" in capsys.readouterr().err


def test_kits_without_lazy_loading_warm_up_to_nothing():
    from hefl.he import mock, paillier

    assert paillier.keygen(512, backend="cpu", allow_insecure=True).warm_up() == {}
    assert mock.keygen(512).warm_up() == {}


def test_prefetch_without_a_gpu_ends_quietly(no_cupy, monkeypatch):
    monkeypatch.setattr(hg, "_PREFETCH", None)
    t = hg.prefetch()
    t.join(30)
    assert not t.is_alive() and hg.prefetch() is t  # once per process


def test_gpu_commands_load_no_other_part_of_hefl():
    # The device check's GPU machine has no pydantic or cryptography: `hefl gpu warmup`
    # must not import the job runner, PSI or the TEE tools to list its own arguments.
    import subprocess
    import sys

    code = ("import sys, hefl.cli; hefl.cli.main(['gpu', 'info']); "
            "print(sorted(m for m in ('pydantic', 'yaml', 'cryptography', 'pandas', "
            "'hefl.jobs.config', 'hefl.psi', 'hefl.tee') if m in sys.modules), file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stderr.strip().splitlines()[-1] == "[]"
    assert '"available"' in out.stdout


def test_command_table_names_every_registered_command():
    import argparse

    from hefl import cli

    parser = cli.build_parser()  # no command line: every module registers
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(sub.choices) == sorted(cli._COMMANDS)
    for command, module in cli._COMMANDS.items():
        assert cli._modules_for(["-v", command, "--help"]) == [module]
    assert cli._modules_for(["--help"]) == cli._COMMAND_MODULES
    assert cli._modules_for(["no-such-command"]) == cli._COMMAND_MODULES
