"""What a pipeline step makes of its KFP inputs: one dataset location and the two ids of a run.

The step bodies in pipeline/steps.py import these at run time, in the task's own process.
"""

from __future__ import annotations


def dataset_location(artifact) -> str:
    """Where the steps read a dataset artifact: its gs:// URI on the cluster (the worker pods of a
    JobSet read it there too), else its local path (the local runners' URI is that path)."""
    return artifact.uri if artifact.uri.startswith("gs://") else artifact.path


def checkpoint_run_id(run_name: str, pipeline_job_id: str) -> str:
    """Names a run's checkpoints: the user's run name, so running the same command again resumes
    it, else the KFP job id, which stays the same when the cluster retries a task."""
    return run_name or pipeline_job_id


def version_id(run_name: str, pipeline_job_id: str) -> str:
    """Names a published registry version: unique per pipeline job (a version is never
    overwritten), led by the run name when there is one."""
    return f"{run_name}-{pipeline_job_id}" if run_name else pipeline_job_id
