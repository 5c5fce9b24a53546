"""Behavioural triggers: rules evaluated inside the processor, timers, sends to the outbox.

The processor calls the engine (``headstart.triggers.engine.TriggerEngine``) for every event
after onboarding and once per batch, all inside its transaction, so enrollments, timers,
outbox rows and decisions commit together with the log offset.
"""
