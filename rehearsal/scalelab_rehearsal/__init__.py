"""scalelab's offline rehearsal: the real template, state machine and handlers on emulated AWS.

Tooling only, never deployed: the Lambda layer stays small. Nothing in
``functions/`` or ``layers/`` knows it is being rehearsed; handlers reach the
emulator through ``AWS_ENDPOINT_URL`` with their normal boto3 clients.
"""

from pathlib import Path

from scalelab_rehearsal import botocore_data

ROOT = Path(__file__).resolve().parents[2]

# Before moto is imported: it reads botocore's data at its import.
botocore_data.share()
