"""Pieces the hook, operators, triggers and sensor share: the poll policy, file helpers, upload reconciliation."""
