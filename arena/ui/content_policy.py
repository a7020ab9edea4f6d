"""Answers may show images only from the arena itself.

A model's answer is rendered as Markdown, so `![](https://elsewhere/x.png)`
would make every volunteer's browser fetch from a server of the model's
choosing: their address and the moment they read the answer, handed to a
third party. Sanitising keeps scripts out; this header keeps such requests
from being made at all. Only images are restricted, so nothing else Gradio
loads is affected.
"""

from __future__ import annotations

IMAGE_POLICY = (b"content-security-policy", b"img-src 'self' data: blob:")


class ImagesFromHereOnly:
    """ASGI middleware adding the image policy to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), IMAGE_POLICY]}
            await send(message)

        await self.app(scope, receive, send_with_policy)
