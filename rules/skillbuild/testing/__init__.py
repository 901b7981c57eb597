"""Test servers on loopback, shared by tests and benchmarks: the fake Vertex AI endpoint and the sqld launcher."""
