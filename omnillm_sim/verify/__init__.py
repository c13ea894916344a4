"""Verification tools: Hypothesis state machines, the interleaving explorer, the
linearizability checker."""
