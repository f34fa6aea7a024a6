"""The local training runtime: each attempt a supervised process group on this machine, surviving restarts."""

from adapters.training.local.runtime import WATCH_INTERVAL_S, LocalTrainingRuntime

__all__ = ["WATCH_INTERVAL_S", "LocalTrainingRuntime"]
