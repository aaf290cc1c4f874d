#!/usr/bin/env bash
# Telemetry's cost on the tiny model: `disttrain bench --telemetry-rounds` exporting traces and
# metrics over OTLP/HTTP to a local sink (docs/benchmarks/otlp-sink.py), default trace sampling.
#   docs/benchmarks/telemetry-overhead.sh [CONFIG] [STEPS] [ROUNDS] [--set key=value ...]     (after `make build`)
set -euo pipefail
cd "$(dirname "$0")/../.."
config=${1:-configs/tiny-muddformer.yaml}; steps=${2:-200}; rounds=${3:-5}; shift $(( $# < 3 ? $# : 3 ))
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 docs/benchmarks/otlp-sink.py "$port" & sink=$!
trap 'kill -TERM $sink 2>/dev/null; wait $sink 2>/dev/null || true' EXIT
sleep 0.5
OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$port OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf OTEL_METRIC_EXPORT_INTERVAL=1000 \
  ${DISTTRAIN:-dotnet src/DistTrain.Cli/bin/Release/net10.0/disttrain.dll} bench --config "$config" --steps "$steps" --warmup 5 \
  --profile-steps 0 --reader-tokens 0 --telemetry-rounds "$rounds" "$@"
