"""scalelab's offline rehearsal: the real template, state machine and handlers on emulated AWS.

Tooling only, never deployed: the Lambda layer stays small. Nothing in
``functions/`` or ``layers/`` knows it is being rehearsed; handlers reach the
emulator through ``AWS_ENDPOINT_URL`` with their normal boto3 clients.
"""

import sys
from pathlib import Path

# Lambda's Python runtime has neither awscrt nor pyOpenSSL; botocore and urllib3 import them at
# their own import when they are installed (aws-sam-cli brings both into this environment), which
# cost each rehearsal about 70 ms of CPU before anything ran, and gave the functions running in
# this process a botocore that Lambda does not run. Hidden here, before botocore is first imported;
# where it already was (a test session's conftest), nothing changes. docs/performance.md
if "botocore" not in sys.modules:
    for _absent_in_lambda in ("awscrt", "OpenSSL"):
        # A None entry makes `import` raise ImportError (the import system's documented rule).
        sys.modules.setdefault(_absent_in_lambda, None)  # type: ignore[arg-type]

from scalelab_rehearsal import botocore_data

ROOT = Path(__file__).resolve().parents[2]

# Before moto is imported: it reads botocore's data at its import.
botocore_data.share()
