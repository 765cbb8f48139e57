"""The local stack of bike-prediction: what runs the pipeline and its tests on one machine.

Modules:
- `kinesis_server`: a Kinesis Data Streams stand-in (the AWS wire protocol, shards by MD5 hash
  key ranges, per-shard write limits, configurable latency), run by scripts/local/services.sh.
- `tls_relay`: HTTPS in front of a local plain-HTTP server, with a test certificate authority
  made at start (services.sh with LOCAL_TLS=on).

Installed (editable) into .venv/tools by scripts/local/setup-tools.sh.
"""
