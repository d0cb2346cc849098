"""How an operator watches a running service: metrics, health endpoints and JSON logs.

- `metrics`: the project's one Prometheus registry and every `safehub_*` metric, with the same
  label names everywhere (service, topic, partition, tier, reason, hub); `ServiceMetrics` binds
  them to one service.
- `health`: `/metrics`, `/livez` and `/readyz` on a small HTTP server on a thread, a heartbeat
  the main loop touches. Every service alike: served when SAFEHUB_HEALTH_PORT is set, on
  SAFEHUB_HEALTH_HOST (default 127.0.0.1).
- `readiness`: the checks behind `/readyz` (broker, database, partitions assigned).
- `logs`: one JSON object per log line with SAFEHUB_LOG_FORMAT=json (or `safehub --log-format
  json`), the same fields everywhere.

No label value and no log field may hold an identifier: labels are our own names (services,
topics, tiers, error classes), never a message or a value from a record.
"""
