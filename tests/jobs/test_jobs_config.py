"""Job files: every shipped config validates; each kind of mistake gets its own clear message."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from jobhelpers import REPO, TEST_DATA, write_yaml

from hefl.cli import main
from hefl.jobs import JobConfigError, load_job

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_shipped_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "credit_secureboost", "hetero_lr", "three_parties", "gpu", "two_hosts"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    job = load_job(path)
    assert job.output.is_relative_to(REPO)
    for p in job.parties.values():
        if p.data is not None:
            assert job.resolve(p.data.path).is_relative_to(REPO / "data"), "configs use the repo's data/"
    assert main(["validate", str(path)]) == 0


def test_quickstart_is_real_paillier_2048():
    job = load_job(REPO / "configs" / "quickstart.yaml")
    assert job.config.he.scheme == "paillier" and job.config.he.key_size == 2048
    assert not job.config.he.allow_insecure
    assert job.step_kinds == ["psi", "train", "evaluate"]
    assert job.task == "binary"


def test_two_hosts_config_with_keys(tmp_path):
    """As each host would check it: its own secret key and every public key must be there."""
    from hefl.transport.curve import write_keypair

    root = tmp_path / "repo"
    (root / "configs").mkdir(parents=True)
    shutil.copy(REPO / "configs" / "two_hosts.yaml", root / "configs")
    shutil.copytree(REPO / "data", root / "data", ignore=shutil.ignore_patterns("default_credit*"))
    cfg = root / "configs" / "two_hosts.yaml"
    with pytest.raises(JobConfigError, match=r"no such key file"):
        load_job(cfg, party="guest")
    write_keypair(root / "keys", "guest")
    write_keypair(root / "keys", "host")
    for party in ("guest", "host"):
        job = load_job(cfg, party=party)
        assert job.curve_enabled()
    # the host's machine need not have the guest's secret key
    (root / "keys" / "guest.key_secret").unlink()
    load_job(cfg, party="host")
    with pytest.raises(JobConfigError, match=r"parties\.guest\.curve_secret_key: no such key file"):
        load_job(cfg, party="guest")
    # --curve-secret-key replaces the job's path (a key kept elsewhere on this host)
    write_keypair(tmp_path / "elsewhere", "guest2")
    job = load_job(cfg, party="guest", curve_secret_key=tmp_path / "elsewhere" / "guest2.key_secret")
    assert job.curve_enabled()
    with pytest.raises(JobConfigError, match=r"no such key file: .*nothing\.key_secret \(--curve-secret-key"):
        load_job(cfg, party="guest", curve_secret_key=tmp_path / "nothing.key_secret")


def test_curve_secret_key_option_needs_curve_keys_in_the_job(tmp_path, job_doc):
    from hefl.transport.curve import write_keypair

    write_keypair(tmp_path / "k", "guest")
    job_doc["parties"]["guest"]["address"] = "tcp://127.0.0.1:7301"
    job_doc["parties"]["host"]["address"] = "tcp://127.0.0.1:7302"
    text = problems(tmp_path, job_doc, party="guest", curve_secret_key=tmp_path / "k" / "guest.key_secret")
    assert "--curve-secret-key is given, but no party has a curve_public_key" in text


# ----------------------------------------------------------------------------- errors


def problems(tmp_path: Path, doc: dict | str, **kw) -> str:
    path = tmp_path / "job.yaml"
    if isinstance(doc, str):
        path.write_text(doc)
    else:
        write_yaml(path, doc)
    with pytest.raises(JobConfigError) as info:
        load_job(path, **kw)
    text = str(info.value)
    assert str(path) in text
    return text


def test_unknown_keys_name_the_key_and_the_allowed_ones(tmp_path, job_doc):
    job_doc["parties"]["host"]["data"]["id_colum"] = "id"
    job_doc["steps"][1]["train"]["parms"] = {}
    job_doc["outptu"] = "x"
    text = problems(tmp_path, job_doc)
    assert "parties.host.data.id_colum: unknown key 'id_colum'" in text
    assert "allowed here: path, format, id_column, label_column, columns, sep" in text
    assert "steps[1].train.parms: unknown key 'parms'" in text
    assert "outptu: unknown key 'outptu'" in text


def test_unknown_step_kind_and_model_parameter(tmp_path, job_doc):
    job_doc["steps"].append({"trian": {}})
    text = problems(tmp_path, job_doc)
    assert "steps[3].trian: unknown key 'trian' (a step is one of: psi, train, evaluate, predict)" in text
    job_doc["steps"].pop()
    job_doc["steps"][1]["train"]["params"]["n_trees"] = 5
    job_doc["steps"][1]["train"]["params"]["max_depth"] = -1
    text = problems(tmp_path, job_doc)
    assert "steps[1].train.params.n_trees: unknown secureboost parameter 'n_trees'" in text
    assert "n_estimators" in text
    assert "steps[1].train.params.max_depth: Input should be greater than or equal to 0, got -1" in text


def test_line_numbers_point_at_the_key(tmp_path, job_doc):
    job_doc["parties"]["host"]["data"]["label_column"] = "y"
    path = write_yaml(tmp_path / "job.yaml", job_doc)
    line = [i for i, t in enumerate(path.read_text().splitlines(), 1) if "label_column: y" in t][-1]
    text = problems(tmp_path, path.read_text())
    assert f"job.yaml:{line}: parties.host.data.label_column: a passive party holds no label" in text


def test_missing_files_and_columns(tmp_path, job_doc):
    job_doc["parties"]["guest"]["data"]["path"] = str(tmp_path / "nope.csv")
    job_doc["parties"]["host"]["data"]["columns"] = ["x0", "x99"]
    job_doc["parties"]["host"]["data"]["id_column"] = "ID"
    text = problems(tmp_path, job_doc)
    assert "parties.guest.data.path: no such file: " + str(tmp_path / "nope.csv") in text
    assert "parties.host.data.id_column: no column 'ID' in breast_hetero_host.csv" in text
    assert "parties.host.data.columns: no column(s) ['x99']" in text


def test_missing_label_column_in_file(tmp_path, job_doc):
    job_doc["parties"]["guest"]["data"]["label_column"] = "label"
    assert "parties.guest.data.label_column: no column 'label' in breast_hetero_guest.csv" in problems(tmp_path, job_doc)


def test_label_on_a_passive_party(tmp_path, job_doc):
    job_doc["parties"]["host"]["data"]["label_column"] = "x0"
    text = problems(tmp_path, job_doc)
    assert "parties.host.data.label_column: a passive party holds no label" in text
    assert "only the active party 'guest' has the label" in text


def test_two_active_parties_and_no_active(tmp_path, job_doc):
    job_doc["parties"]["host"]["role"] = "active"
    job_doc["parties"]["host"]["data"]["label_column"] = "x0"
    text = problems(tmp_path, job_doc)
    assert "parties.host.role: 2 active parties (guest, host); exactly one party holds the label" in text
    job_doc["parties"]["host"]["role"] = job_doc["parties"]["guest"]["role"] = "passive"
    del job_doc["parties"]["host"]["data"]["label_column"]
    assert "no active party" in problems(tmp_path, job_doc)


@pytest.mark.parametrize("address, message", [
    ("nonsense", "'nonsense' is not a tcp://HOST:PORT address"),
    ("tcp://10.0.0.1", "'tcp://10.0.0.1' is not a tcp://HOST:PORT address"),
    ("tcp://10.0.0.1:99999", "port 99999 out of range 1-65535"),
    ("udp://10.0.0.1:7000", "'udp://10.0.0.1:7000' is not a tcp://HOST:PORT address"),
    ("tcp://*:7000", "'tcp://*:7000' is not a tcp://HOST:PORT address"),
])
def test_bad_addresses(tmp_path, job_doc, address, message):
    job_doc["parties"]["guest"]["address"] = "tcp://127.0.0.1:7000"
    job_doc["parties"]["host"]["address"] = address
    text = problems(tmp_path, job_doc)
    assert f"parties.host.address: {message}" in text


def test_same_address_twice_and_party_mode_needs_addresses(tmp_path, job_doc):
    job_doc["parties"]["guest"]["address"] = "tcp://127.0.0.1:7000"
    job_doc["parties"]["host"]["address"] = "tcp://127.0.0.1:7000"
    assert "is also the address of 'guest'" in problems(tmp_path, job_doc)
    del job_doc["parties"]["host"]["address"]
    write_yaml(tmp_path / "ok.yaml", job_doc)
    load_job(tmp_path / "ok.yaml")  # embedded runs pick free loopback ports
    assert "parties.host: missing 'address'" in problems(tmp_path, job_doc, party="guest")
    assert "--party 'nobody' is not a party of this job" in problems(tmp_path, job_doc, party="nobody")


def test_acceptance_bad_config(tmp_path):
    text = problems(tmp_path, 'parties:\n  a: {address: "tcp://127.0.0.1:1", role: active}\n'
                              '  b: {address: "nonsense", role: active}\n')
    assert "job.yaml:3: parties.b.address: 'nonsense' is not a tcp://HOST:PORT address" in text
    assert "2 active parties (a, b)" in text
    assert "no steps" in text


def test_steps_order_and_repeats(tmp_path, job_doc):
    job_doc["steps"] = [job_doc["steps"][2], job_doc["steps"][1], job_doc["steps"][0], {"psi": {}}]
    text = problems(tmp_path, job_doc)
    assert "steps[0].evaluate: evaluate must come after train" in text
    assert "steps[2].psi: psi must come before train" in text
    assert "steps[3].psi: a second psi step" in text
    job_doc["steps"] = [{"psi": {}}]
    assert "no train step" in problems(tmp_path, job_doc)
    job_doc["steps"] = [{"psi": {}, "train": {"model": "secureboost"}}]
    assert "exactly one of psi, train, evaluate, predict" in problems(tmp_path, job_doc)


def test_he_settings(tmp_path, job_doc):
    job_doc["he"] = {"scheme": "mock"}
    assert "he.scheme: scheme 'mock' sends values in the clear; set he.allow_insecure: true" in \
        problems(tmp_path, job_doc)
    job_doc["he"] = {"scheme": "paillier", "key_size": 1024}
    assert "he.key_size: key_size 1024 is below 2048 bits" in problems(tmp_path, job_doc)
    job_doc["he"] = {"scheme": "rsa"}
    assert "he.scheme: Input should be 'paillier', 'ou', 'ckks' or 'mock', got 'rsa'" in problems(tmp_path, job_doc)
    job_doc["he"] = {"scheme": "ckks"}
    assert "secureboost needs an additive scheme" in problems(tmp_path, job_doc)


def test_metrics_must_fit_the_task(tmp_path, job_doc):
    job_doc["steps"][2]["evaluate"]["metrics"] = ["auc", "rmse", "bogus"]
    text = problems(tmp_path, job_doc)
    assert "unknown metric 'bogus'" in text
    job_doc["steps"][2]["evaluate"]["metrics"] = ["auc", "rmse"]
    assert "metric 'rmse' does not apply to a binary task" in problems(tmp_path, job_doc)


def test_predict_step_needs_every_data_party(tmp_path, job_doc):
    job_doc["steps"].append({"predict": {"data": {"guest": {"path": str(TEST_DATA / "breast_hetero_guest.csv")},
                                                  "stranger": {"path": "x.csv"}}}})
    text = problems(tmp_path, job_doc)
    assert "'stranger' is not a party of this job" in text
    assert "missing the rows to predict of party 'host'" in text


def test_predict_columns_are_the_model_features(tmp_path, job_doc):
    host = {"path": str(TEST_DATA / "breast_hetero_host.csv")}
    job_doc["steps"].append({"predict": {"data": {
        "guest": {"path": str(TEST_DATA / "breast_hetero_guest.csv"), "columns": ["x0", "x1"]},
        "host": host}}})
    text = problems(tmp_path, job_doc)
    assert "predict.data.guest.columns: the model takes the feature(s) it is trained on" in text


def test_exponent_numbers_are_numbers(tmp_path, job_doc):
    # YAML 1.2 floats (PyYAML's YAML 1.1 reads 1e-2 as text); quoted text stays text
    job_doc["steps"][1]["train"]["params"].update(learning_rate="LR", reg_lambda="RL")
    text = yaml.safe_dump(job_doc, sort_keys=False).replace("LR", "1e-2").replace("RL", "2.5E+1")
    (tmp_path / "job.yaml").write_text(text)
    job = load_job(tmp_path / "job.yaml")
    assert job.train.params == {"n_estimators": 3, "max_depth": 2, "learning_rate": 0.01, "reg_lambda": 25.0}
    text = text.replace("learning_rate: 1e-2", "learning_rate: '1e-2'")
    assert "learning_rate: Input should be a valid number" in problems(tmp_path, text)


def test_yaml_syntax_duplicates_and_shape(tmp_path, job_doc):
    assert "not valid YAML" in problems(tmp_path, "parties: [a\n")
    assert "key 'seed' given twice" in problems(tmp_path, "seed: 1\nseed: 2\n")
    assert "the job file is empty" in problems(tmp_path, "")
    assert "a job file is a mapping" in problems(tmp_path, "- a\n- b\n")
    with pytest.raises(JobConfigError, match="no such job file"):
        load_job(tmp_path / "missing.yaml")


def test_arbiter_only_for_hetero_lr(tmp_path, job_doc):
    job_doc["parties"]["c"] = {"role": "arbiter"}
    assert "model 'secureboost' has no arbiter role" in problems(tmp_path, job_doc)


def test_paths_are_relative_to_the_yaml_file(tmp_path, job_doc):
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    shutil.copy(TEST_DATA / "breast_hetero_guest.csv", tmp_path / "a")
    doc = copy.deepcopy(job_doc)
    doc["parties"]["guest"]["data"]["path"] = "../breast_hetero_guest.csv"
    doc["output"] = "../runs"
    job = load_job(write_yaml(sub / "job.yaml", doc))
    assert job.resolve(job.parties["guest"].data.path) == tmp_path / "a" / "breast_hetero_guest.csv"
    assert job.output == tmp_path / "a" / "runs"


def test_validate_command_exit_codes(tmp_path, job_doc, capsys):
    good = write_yaml(tmp_path / "good.yaml", job_doc)
    assert main(["validate", str(good)]) == 0
    assert "good.yaml: OK" in capsys.readouterr().out
    job_doc["parties"]["host"]["address"] = "nonsense"
    bad = write_yaml(tmp_path / "bad.yaml", job_doc)
    assert main(["validate", str(bad)]) == 2
    assert "parties.host.address" in capsys.readouterr().err
    assert main(["run", str(bad)]) == 2  # refused before any process starts
    assert "parties.host.address" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["run", "--help"], ["validate", "--help"], ["--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: hefl" in out
    if argv[0] == "--help":
        assert "run" in out and "validate" in out


def test_parquet_data(tmp_path, job_doc):
    pytest.importorskip("pyarrow")
    import numpy as np
    import pandas as pd

    from hefl.jobs._data import read_table

    frame = pd.read_csv(TEST_DATA / "breast_hetero_guest.csv", dtype={"id": str})
    frame.to_parquet(tmp_path / "guest.parquet")
    job_doc["parties"]["guest"]["data"]["path"] = str(tmp_path / "guest.parquet")
    job = load_job(write_yaml(tmp_path / "job.yaml", job_doc))
    assert job.task == "binary"
    a = read_table(tmp_path / "guest.parquet", "auto", ",", "id", "y", None)
    b = read_table(TEST_DATA / "breast_hetero_guest.csv", "auto", ",", "id", "y", None)
    assert a.columns == b.columns and list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(a.X, b.X)
    job_doc["parties"]["guest"]["data"]["columns"] = ["x0", "nope"]
    assert "no column(s) ['nope'] in guest.parquet" in problems(tmp_path, job_doc)


def test_file_problems_of_every_party_at_once(tmp_path, job_doc):
    # duplicate IDs in both files: both are named (one party's problem hid the other's)
    for party in ("guest", "host"):
        src = TEST_DATA / f"breast_hetero_{party}.csv"
        lines = src.read_text().splitlines()
        (tmp_path / f"{party}.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
        job_doc["parties"][party]["data"]["path"] = str(tmp_path / f"{party}.csv")
    text = problems(tmp_path, job_doc)
    assert "parties.guest.data.id_column: ID '133' appears more than once in guest.csv" in text
    assert "parties.host.data.id_column: ID '133' appears more than once in host.csv" in text


def test_header_only_file_and_empty_step_and_dot_names(tmp_path, job_doc):
    guest = TEST_DATA / "breast_hetero_guest.csv"
    (tmp_path / "g.csv").write_text(guest.read_text().splitlines()[0] + "\n")
    doc = copy.deepcopy(job_doc)
    doc["parties"]["guest"]["data"]["path"] = str(tmp_path / "g.csv")
    text = problems(tmp_path, doc)
    assert "g.csv has no rows (only a header)" in text and "single value" not in text
    # "- psi:" with nothing after the colon is an empty psi step
    text = yaml.safe_dump(job_doc, sort_keys=False).replace("- psi: {}", "- psi:")
    assert "- psi:\n" in text
    (tmp_path / "job.yaml").write_text(text)
    assert load_job(tmp_path / "job.yaml").step("psi") is not None
    # a party named ".." would write its outputs above OUTPUT/
    doc = copy.deepcopy(job_doc)
    doc["parties"][".."] = doc["parties"].pop("host")
    assert "party name '..' is a directory name of its own" in problems(tmp_path, doc)


@pytest.mark.parametrize("change, message", [
    (lambda d: d["steps"][0]["psi"].update(n_jobs=0), "psi.n_jobs: n_jobs must be a number of processes"),
    (lambda d: d["he"].update(scheme="paillier", key_size=2049), "he.key_size: a Paillier key_size must be even"),
    (lambda d: d["steps"][1]["train"]["params"].update(base_score=1.5),
     "params.base_score: base_score of a binary task is a probability in (0, 1), got 1.5"),
    (lambda d: d["steps"][1]["train"]["params"].update(max_depth=0),
     "params.max_depth: max_depth: 0 (unlimited) needs max_leaves > 0"),
    (lambda d: d["steps"][2]["evaluate"].update(test_size=0.001),
     "evaluate.test_size: test_size 0.001 of 569 rows holds out 1 row(s)"),
])
def test_settings_a_run_would_refuse_are_refused_by_validation(tmp_path, job_doc, change, message):
    # each of these passed validation and failed only inside a party process
    change(job_doc)
    assert message in problems(tmp_path, job_doc)


def test_hetero_lr_on_ckks_takes_one_passive_party(tmp_path, job_doc):
    job_doc["parties"]["host2"] = copy.deepcopy(job_doc["parties"]["host"])
    job_doc["he"] = {"scheme": "ckks"}
    job_doc["steps"][1] = {"train": {"model": "hetero_lr"}}
    assert "hetero_lr on ckks supports one passive party, this job has 2" in problems(tmp_path, job_doc)
