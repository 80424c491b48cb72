"""The runtime's base: settings, topic names, Kafka clients, output sinks and the one adapter
over Faust's and aiokafka's non-public APIs. It imports only `schemas`; `agents` builds on it and
`streams` (the app, HTTP, CLI and client tools) builds on both."""
