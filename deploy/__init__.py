"""Deployment tooling: the compose file checker, the ``.env`` writer and the no-Docker distributed run."""
