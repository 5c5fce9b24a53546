"""The processor: applies logged events, in order, to derived state, exactly once."""

from headstart.processor.processor import Processor

__all__ = ["Processor"]
