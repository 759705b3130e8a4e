"""Container health check: exit 0 when this service's /readyz answers 200, else 1.

The image has no curl; the service's port comes from PORT, as the service reads it.
"""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/readyz"
try:
    with urllib.request.urlopen(url, timeout=3) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:  # URLError and HTTPError (503 when not ready) are OSErrors
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
