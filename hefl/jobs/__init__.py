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

from ._party import run_party
from .config import Job, JobConfig, JobConfigError, load_job
from .runner import JobResult, PartyFailed, format_summary, run_job, run_one_party

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
