"""The processor: applies logged events, in order, to derived state, exactly once.

``processor.Processor`` applies batches; ``worker`` runs it as a child process of the server.
"""
