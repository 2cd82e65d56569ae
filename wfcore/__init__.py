"""wfcore: an embeddable asyncio workflow engine built as a plugin framework."""

from .engine import ECSWorkflowEngine, current_engine
from .errors import (
    AdapterError,
    ArtifactError,
    CommandError,
    InvalidOutputError,
    InvalidTaskError,
    InvalidWorkflowError,
    PermanentError,
    PluginError,
    RetryLater,
    StoreError,
    TaskStateError,
    UnknownTaskError,
    UnknownWorkflowError,
    WorkflowError,
)
from .hookspecs import hookimpl
from .model import DEFINE_WORKFLOW, Artifact, Phase, Task, TaskStatus, TaskType, WorkflowSpec
from .schedules import Schedule
from .stores import MemoryStore, SQLiteStore, Store

__all__ = [
    "DEFINE_WORKFLOW",
    "AdapterError",
    "Artifact",
    "ArtifactError",
    "CommandError",
    "ECSWorkflowEngine",
    "InvalidOutputError",
    "InvalidTaskError",
    "InvalidWorkflowError",
    "MemoryStore",
    "PermanentError",
    "Phase",
    "PluginError",
    "RetryLater",
    "SQLiteStore",
    "Schedule",
    "Store",
    "StoreError",
    "Task",
    "TaskStateError",
    "TaskStatus",
    "TaskType",
    "UnknownTaskError",
    "UnknownWorkflowError",
    "WorkflowError",
    "WorkflowSpec",
    "current_engine",
    "hookimpl",
]
