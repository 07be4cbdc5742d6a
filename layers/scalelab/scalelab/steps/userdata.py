"""The EC2 user data for the lab's instances, rendered from checked-in files."""

from __future__ import annotations

import base64

from scalelab.core.assets import asset_text


def render_user_data(app_port: int, health_path: str) -> str:
    """``user-data.sh`` with the app and its settings filled in.

    The app travels base64-encoded so no character in it can end a shell
    string early. ``health_path`` is validated by the input model to hold no
    quote or shell-special character.
    """
    app_b64 = base64.b64encode(asset_text("app.js").encode()).decode()
    script = asset_text("user-data.sh")
    for token, value in {
        "__SCALELAB_APP_PORT__": str(app_port),
        "__SCALELAB_HEALTH_PATH__": health_path,
        "__SCALELAB_APP_JS_B64__": app_b64,
    }.items():
        if token not in script:
            raise RuntimeError(f"user-data.sh has lost its {token} placeholder")
        script = script.replace(token, value)
    return script
