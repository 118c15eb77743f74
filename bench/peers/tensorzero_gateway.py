"""Runs the TensorZero gateway that ships inside the `tensorzero` PyPI package as an HTTP server.

The wheel embeds the Rust gateway; `_start_http_gateway` (what `patch_openai_client` uses) binds
it to a free port on 127.0.0.1 and serves the OpenAI-compatible API there. The port is chosen
by TensorZero, so this prints the base URL on stdout and then keeps the process alive.

usage: python tensorzero_gateway.py CONFIG_FILE
"""

import signal
import sys
import time

import tensorzero

gateway = tensorzero._start_http_gateway(
    config_file=sys.argv[1],
    clickhouse_url=None,
    postgres_url=None,
    valkey_url=None,
    async_setup=False,
)
print(f"BASE_URL {gateway.base_url}", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(3600)
