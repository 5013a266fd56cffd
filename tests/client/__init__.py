"""Tests of the Python client library and CLI (candlewire_client)."""
