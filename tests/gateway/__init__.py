"""Tests of the grpc-web gateway."""
