"""The job runner: a YAML file describes a whole vertical federated job.

A job names its parties (role, address, CURVE key, data), the HE settings and the steps
-- ``psi`` (align the rows), ``train`` (a model and its parameters), ``evaluate``
(metrics on held-out rows) and ``predict`` (score a second file) -- and where outputs go::

    from hefl.jobs import load_job, run_job, format_summary

    job = load_job("configs/quickstart.yaml")     # every check, before anything starts
    result = run_job(job)                          # every party in its own local process
    print(format_summary(result))

From the command line: ``hefl validate JOB.yaml``, ``hefl run JOB.yaml`` (embedded: all
parties on this machine) and ``hefl run JOB.yaml --party NAME`` (one party of a
multi-host deployment, see :func:`run_one_party`). ``docs/jobs.md`` is the reference
for the file format, the outputs and what each party learns.
"""

# Loaded on first use (PEP 562): the ``hefl`` command imports hefl.jobs._progress for
# its log format, and ``hefl gpu warmup`` or ``hefl keygen`` should not pull in pydantic
# and pandas for a job they do not run.
_LAZY = {
    "run_party": "._party",
    "Job": ".config",
    "JobConfig": ".config",
    "JobConfigError": ".config",
    "load_job": ".config",
    "JobResult": ".runner",
    "PartyFailed": ".runner",
    "format_summary": ".runner",
    "run_job": ".runner",
    "run_one_party": ".runner",
}

__all__ = [
           "Job",
           "JobConfig",
           "JobConfigError",
           "JobResult",
           "PartyFailed",
           "format_summary",
           "load_job",
           "run_job",
           "run_one_party",
           "run_party",
]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
