"""Docker HEALTHCHECK: 200 from /readyz on the metrics port (jobscore/health.py), else exit 1.

Standard library only, so it costs no interpreter start-up of the project (~50 ms).
"""

import os
import sys
import urllib.error
import urllib.request

# The port: the first argument (the lag exporter's --port), else the service's metrics port.
port = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("JOBSCORE_METRICS_PORT", "9100")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=4) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except (urllib.error.URLError, OSError) as e:
    print(f"not ready: {e}", file=sys.stderr)
    sys.exit(1)
