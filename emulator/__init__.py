"""A local emulator of the Connectif REST API (see ../shared/connectif-api.md)."""
