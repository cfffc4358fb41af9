"""The Kafka tests' broker and topics are ``kafka_broker`` and ``topic`` of tests/conftest.py,
shared with tests/live: one broker per test session."""
