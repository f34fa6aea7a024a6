"""What the tracking store raises; each face (MLflow's REST subset, the admin envelope) renders it its own way.

    TrackingError              (MLflow ``error_code``; HTTP status)
    ├── ResourceMissing        RESOURCE_DOES_NOT_EXIST  404
    ├── InvalidValue           INVALID_PARAMETER_VALUE  400   ``field`` names the rejected input
    ├── AlreadyExists          RESOURCE_ALREADY_EXISTS  400   (MLflow answers 400 here, not 409)
    ├── Unauthenticated        UNAUTHENTICATED          401
    └── PermissionDenied       PERMISSION_DENIED        403   (a job's token outside its own run)

Messages are safe to show: they never hold a token, a key or a stored value beyond the caller's own input.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = ["AlreadyExists", "InvalidValue", "PermissionDenied", "ResourceMissing", "TrackingError", "Unauthenticated"]


class TrackingError(Exception):
    error_code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ResourceMissing(TrackingError):
    error_code = "RESOURCE_DOES_NOT_EXIST"
    status = 404


class InvalidValue(TrackingError):
    error_code = "INVALID_PARAMETER_VALUE"
    status = 400


class AlreadyExists(TrackingError):
    error_code = "RESOURCE_ALREADY_EXISTS"
    status = 400


class Unauthenticated(TrackingError):
    error_code = "UNAUTHENTICATED"
    status = 401


class PermissionDenied(TrackingError):
    error_code = "PERMISSION_DENIED"
    status = 403
