"""What can go wrong in the service, in its own words; web/errors.py turns each into HTTP.

Every error here has a stable code and a message that never quotes content
(no prompt, no image, no token): jobs and batches record them as they are, and
the HTTP layer shows them with the status its one table gives their class.
Errors raised by imagegen and store are described here too, so a job record
and an HTTP response say the same thing about them.
"""

from __future__ import annotations

from dataclasses import dataclass

from imagegen.batcher import QueueFull
from imagegen.pipelines.base import RequestRefused
from imagegen.worker import DeadlineExceeded, DeviceOutOfMemory, JobCanceled, PipelineFailed
from store import StoreFull, StoreUnavailable

__all__ = [
    "AdapterNotFound",
    "BatchEnded",
    "BatchExpired",
    "BatchNotFound",
    "BatchStorageUnavailable",
    "DeadlineExceeded",
    "DeviceOutOfMemory",
    "Failure",
    "IdempotencyConflict",
    "InvalidInput",
    "JobCanceled",
    "JobEnded",
    "JobNotFound",
    "PipelineFailed",
    "QueueFull",
    "RequestRefused",
    "ServiceError",
    "StoreFull",
    "StoreUnavailable",
    "TooManyBatches",
    "TooManyJobs",
    "failure_of",
]


@dataclass(frozen=True, slots=True)
class Failure:
    """What a client is told about an error: a code, a message, maybe the field at fault."""

    code: str
    message: str
    param: str | None = None


class ServiceError(Exception):
    """A domain error; subclasses set the code and the default message."""

    code = "error"
    message = "The request failed."
    param: str | None = None
    # Seconds after which a retry may succeed (the HTTP layer sends it as Retry-After).
    retry_after: float | None = None

    def __init__(self, message: str | None = None, param: str | None = None) -> None:
        super().__init__(message or self.message)
        self.message = message or self.message
        if param is not None:
            self.param = param

    @property
    def failure(self) -> Failure:
        return Failure(self.code, self.message, self.param)


class InvalidInput(ServiceError):
    """The request breaks a rule the service checks (prompt words, the TTL policy)."""

    code = "invalid_value"


class AdapterNotFound(ServiceError):
    code = "lora_not_found"
    message = "The adapter does not exist or has expired."


class JobNotFound(ServiceError):
    code = "job_not_found"
    message = "The job does not exist or has expired."


class JobEnded(ServiceError):
    code = "job_ended"
    message = "The job has already ended; there is nothing to cancel."


class IdempotencyConflict(ServiceError):
    code = "idempotency_key_reused"
    message = "This Idempotency-Key was used with a different body."
    param = "Idempotency-Key"


class BatchNotFound(ServiceError):
    code = "batch_not_found"
    message = "This batch does not exist or its retention has ended."


class BatchEnded(ServiceError):
    code = "batch_ended"
    message = "The batch has already ended."


class TooManyBatches(ServiceError):
    code = "too_many_batches"
    message = "Too many batches are waiting; retry later."
    retry_after = 30


class TooManyJobs(ServiceError):
    code = "too_many_jobs"
    message = "Too many job records are held; retry when older ones expire."
    retry_after = 5.0  # when no held record has an expiry yet

    def __init__(self, retry_after: float | None = None) -> None:
        super().__init__()
        if retry_after is not None:
            self.retry_after = max(1.0, retry_after)


class BatchStorageUnavailable(ServiceError):
    code = "batch_storage_unavailable"
    message = "The batch directory cannot be written; retry later."
    retry_after = 30


class BatchExpired(ServiceError):
    code = "batch_expired"
    message = "The batch's retention ended before this line was stored."


# The errors of the stages below, described once for every surface.
_BELOW: dict[type[Exception], Failure] = {
    QueueFull: Failure("queue_full", "The queue is full; retry after a moment."),
    StoreFull: Failure("store_full", "The image store is full; retry later or ask for b64_json."),
    StoreUnavailable: Failure("store_unavailable", "The image store is unavailable; retry later."),
    DeviceOutOfMemory: Failure("out_of_memory", "The device ran out of memory; retry with fewer "
                               "or smaller images."),
    DeadlineExceeded: Failure("timeout", "Generation took longer than the request deadline."),
    JobCanceled: Failure("canceled", "The request was canceled."),
    PipelineFailed: Failure("pipeline_failed", "The model failed on this request."),
}


def failure_of(exc: BaseException) -> Failure | None:
    """The client-safe description of a known error; None for anything unexpected."""
    if isinstance(exc, ServiceError):
        return exc.failure
    if isinstance(exc, RequestRefused):  # its message names only the model and the field
        return Failure("invalid_value", exc.message, exc.param)
    for kind, failure in _BELOW.items():
        if isinstance(exc, kind):
            return failure
    return None
