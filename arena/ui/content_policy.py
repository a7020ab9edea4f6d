"""Answers may load images, audio and video only from the arena itself.

A model's answer is rendered as sanitised Markdown, which keeps `<img>`,
`<audio>` and `<video>`: `![](https://elsewhere/x.png)` would make every
volunteer's browser fetch from a server of the model's choosing, handing it
their address and the moment they read the answer. Sanitising keeps scripts
out; this header keeps such requests from being made at all. Only media and
plugins are restricted, so nothing else Gradio loads is affected.
"""

from __future__ import annotations

MEDIA_POLICY = (b"content-security-policy", b"img-src 'self' data: blob:; media-src 'self' data: blob:; object-src 'none'")


class MediaFromHereOnly:
    """ASGI middleware adding the media policy to every HTTP response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_policy(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), MEDIA_POLICY]}
            await send(message)

        await self.app(scope, receive, send_with_policy)
