"""Does the store already hold a stage's finished output for this config? The operator asks before it starts a
stage and when a stage's Job has vanished (ttlSecondsAfterFinished, a manual delete), so a finished stage never
runs again because its Job is gone.

Read with the operator's own S3 credentials (the chart's `s3.credentialsSecret`), short timeouts and one
retry: an unreachable store only means the Job is created, and the worker, which checks the same manifest
first, then skips in seconds.
"""

from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

from lrm_safety.spec import Experiment, SafetyExperimentSpec

log = logging.getLogger("lrm-safety-operator")


@functools.lru_cache(maxsize=64)
def _client(endpoint: Optional[str], region: Optional[str]):
    """One S3 client per endpoint and region, kept: building one costs tens of milliseconds, and progress is read
    for every running experiment every minute (boto3 clients are thread-safe)."""
    import os

    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ.get("AWS_ENDPOINT_URL"),
        region_name=region or os.environ.get("AWS_REGION") or "us-east-1",
        config=Config(
            connect_timeout=3,
            read_timeout=10,
            retries={"max_attempts": 2, "mode": "standard"},
            s3={"addressing_style": "path"},
        ),
    )


def _store(spec: SafetyExperimentSpec):
    from lrm_safety.store import S3Store

    bucket, _, prefix = spec.storage.uri[5:].partition("/")
    return S3Store(bucket, prefix, client=_client(spec.storage.endpoint, spec.storage.region))


def credentials_available() -> bool:
    """Whether boto3 finds S3 credentials (env, file, web identity, instance role): asked once, at start."""
    import boto3

    try:
        return boto3.session.Session().get_credentials() is not None
    except Exception:  # a broken profile file: as good as none
        return False


class ProgressReader:
    """One running stage's progress objects, each read with its last ETag: an unchanged object costs a 304 and no
    body, and no LIST is needed because the keys follow from the spec (one per distill shard, else one)."""

    def __init__(self, name: str, spec: SafetyExperimentSpec, stage: str, job: Optional[str]):
        from lrm_safety.progress import progress_key

        self.stage = stage
        self.job = job  # the stage attempt's Job, whose pods must run before a read
        self.bucket, _, root = spec.storage.uri[5:].partition("/")
        self.root = root.strip("/")
        self.endpoint, self.region = spec.storage.endpoint, spec.storage.region
        prefix = f"{name}/{stage}"
        parts = range(spec.distill.shards) if stage == "distill" else [None]
        self.keys = [progress_key(prefix, part) for part in parts]
        self.etags: dict[str, str] = {}
        self.docs: dict[str, dict] = {}

    def read(self) -> Optional[dict]:
        """The combined progress when any object changed since the last read, else None."""
        import json

        from botocore.exceptions import ClientError

        from lrm_safety.progress import combine

        s3 = _client(self.endpoint, self.region)
        changed = False
        for key in self.keys:
            full = f"{self.root}/{key}" if self.root else key
            kw = {"IfNoneMatch": self.etags[key]} if key in self.etags else {}
            try:
                obj = s3.get_object(Bucket=self.bucket, Key=full, **kw)
            except ClientError as e:
                code = str(e.response.get("Error", {}).get("Code"))
                if code in ("304", "NotModified", "NoSuchKey", "404"):
                    continue
                raise
            self.etags[key] = obj.get("ETag", "")
            self.docs[key] = json.loads(obj["Body"].read())
            changed = True
        return combine(list(self.docs.values())) if changed else None


def finished_in_store(name: str, namespace: str, spec: SafetyExperimentSpec) -> Callable[[str], Optional[dict]]:
    """stage -> the finished stage's summary (from its manifest), or None. file:// stores are the pods', not ours."""
    if not spec.storage.uri.startswith("s3://"):
        return lambda stage: None
    from lrm_safety.context import StageContext
    from lrm_safety.stages.common import summary_from_manifest

    # The operator cannot see the pods' local paths: a stage reading one is looked up by its own manifest only.
    ctx = StageContext(Experiment(name=name, namespace=namespace, spec=spec), local_inputs=False)

    def lookup(stage: str) -> Optional[dict]:
        try:
            if ctx._store is None:
                ctx._store = _store(spec)
            found = ctx.resolve(stage)
            if found is None:
                return None
            src, manifest = found
            extra = {"source": src} if src != ctx.prefix(stage) else {}
            if manifest.get("reusedFrom") and not manifest.get("linkedAt"):
                extra["reusedFrom"] = manifest["reusedFrom"]
            return summary_from_manifest(manifest, **extra)
        except Exception as e:  # no credentials, no bucket, an outage: the worker decides instead
            log.info(
                "%s/%s: cannot read the %s manifest (%s: %s); the stage's pod will check it",
                namespace,
                name,
                stage,
                type(e).__name__,
                e,
            )
            return None

    return lookup
