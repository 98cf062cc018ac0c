"""The web UI (gradio): chat about an uploaded or recorded video, audio or image.

Left: the media inputs (upload; webcam and microphone where the browser allows), a preview of the
frames the model will see and of the waveform it will hear, and the settings. Right: the chat,
streamed token by token, multi-turn, with Regenerate and Clear. Media uploaded during a conversation
are attached to the next message sent. Every request goes through the shared
:class:`~mico_chat.serve.engine.ChatEngine`, so UI users and API clients batch together and share
one queue limit.

Nothing typed is lost on an error: a refused upload or a failed request puts the question back in
the text box and says what went wrong (in the status line and as a toast).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from mico_chat.api import GenerationSettings
from mico_chat.media import MediaError, probe

from .config import ServeLimits
from .engine import ChatEngine, EngineClosedError, QueueFullError
from .examples import ExampleClip
from .preview import preview_media

MEDIA_KINDS = ("video", "audio", "image")
LABELS = {"video": "Video", "audio": "Audio", "image": "Image"}
CSS = """
#frames-preview .thumbnail-item { min-height: 60px; }
footer { display: none !important; }
"""


@dataclass(frozen=True)
class UiConfig:
    """The web UI's settings.

    Args:
        title: page title and heading.
        note: a line under the heading (e.g. that the default's encoder is not trained yet).
        examples: example clips (see :mod:`mico_chat.serve.examples`).
        limits: upload limits (size, duration, pixels) and the most tokens a reply may take.
        max_new_tokens: the reply-length slider's starting value.
    """

    title: str = "MiCo-Chat"
    note: str = ""
    examples: Sequence[ExampleClip] = ()
    limits: ServeLimits = field(default_factory=ServeLimits)
    max_new_tokens: int = 256


def empty_session() -> dict[str, Any]:
    """Per-browser-tab state: the conversation as ChatModel messages, and the media already attached."""
    return {"messages": [], "attached": []}


def build_ui(engine: ChatEngine, config: UiConfig) -> gr.Blocks:
    """The gradio app; mount it with ``gr.mount_gradio_app`` (see :mod:`mico_chat.commands.serve`)."""
    limits = config.limits
    media_limits = limits.media_limits
    encoder = engine.chat.model.config.encoder_config
    model_frames = engine.media_settings.num_frames
    max_frames = max(model_frames, encoder.segment_limit)

    def media_of(video: str | None, audio: str | None, image: str | None) -> list[tuple[str, str]]:
        return [(kind, path) for kind, path in zip(MEDIA_KINDS, (video, audio, image)) if path]

    def check_upload(kind: str, path: str) -> None:
        """Header checks before anything is decoded; raises MediaError naming the file and the limit."""
        name = Path(path).name
        info = probe(path, name=name, limits=media_limits)
        if kind == "video" and not info.has_video:
            raise MediaError(name, "holds no video stream; upload it in the Audio tab")
        if kind == "audio" and not info.has_audio:
            raise MediaError(name, "holds no audio track")

    def update_preview(video, audio, image, num_frames, use_audio):
        frames: list = []
        plot = None
        lines = []
        try:
            if video:
                shown = preview_media(video, "video", num_frames=int(num_frames), with_audio=use_audio, limits=media_limits)
                frames, plot = shown.frames, shown.waveform
                lines.append(f"**{LABELS['video']}** {Path(video).name}: {shown.summary}")
            if audio:
                shown = preview_media(audio, "audio", num_frames=1, with_audio=True, limits=media_limits)
                plot = shown.waveform  # an uploaded audio is what the waveform shows, if both are there
                lines.append(f"**{LABELS['audio']}** {Path(audio).name}: {shown.summary}")
            if image:
                check_upload("image", image)
                lines.append(f"**{LABELS['image']}** {Path(image).name}: ready")
        except MediaError as err:
            message = f"{Path(err.path).name}: {err.reason}"  # the upload's name, not the server's temp path
            gr.Warning(f"Cannot use this upload: {message}")
            return [], None, f"**Cannot use this upload**: {message}"
        return frames, plot, "  \n".join(lines) or "Upload a video, audio or image, or try an example below."

    def display(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        shown = []
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                shown.append({"role": message["role"], "content": content})
                continue
            lines = [f"*[{p['type']}: {Path(p[p['type']]).name}]*" for p in content if p["type"] in MEDIA_KINDS]
            lines += [p["text"] for p in content if p["type"] == "text" and p["text"]]
            shown.append({"role": message["role"], "content": "\n\n".join(lines)})
        return shown

    async def stream_reply(messages, num_frames, use_audio, temperature, max_tokens) -> AsyncIterator[str]:
        settings = GenerationSettings(max_new_tokens=int(max_tokens), temperature=float(temperature))
        reply = await engine.submit(messages, settings, num_frames=int(num_frames), video_audio=bool(use_audio))
        async for event in reply:
            if event.text:
                yield event.text

    def failure_text(err: Exception) -> str:
        if isinstance(err, QueueFullError):
            return f"The server is busy: {err}"
        if isinstance(err, EngineClosedError):
            return f"The server is stopping: {err}"
        if isinstance(err, MediaError):
            return f"Cannot use this upload: {Path(err.path).name}: {err.reason}"
        return f"Cannot answer: {err}"

    async def respond(text, video, audio, image, num_frames, use_audio, temperature, max_tokens, session):
        text = (text or "").strip()
        new = [(k, p) for k, p in media_of(video, audio, image) if p not in session["attached"]]
        if not text and not new:
            gr.Warning("Type a question first.")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        try:
            for kind, path in new:
                check_upload(kind, path)
        except MediaError as err:
            gr.Warning(failure_text(err))
            yield gr.skip(), text, gr.skip(), f"**{failure_text(err)}**"
            return
        parts = [{"type": kind, kind: path} for kind, path in new] + [{"type": "text", "text": text}]
        messages = [*session["messages"], {"role": "user", "content": parts}]
        async for update in _stream(messages, text, num_frames, use_audio, temperature, max_tokens, session, new):
            yield update

    async def regenerate(num_frames, use_audio, temperature, max_tokens, session):
        messages = session["messages"]
        if not messages or messages[-1]["role"] != "assistant":
            gr.Warning("Nothing to regenerate yet.")
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip()
            return
        async for update in _stream(messages[:-1], None, num_frames, use_audio, temperature, max_tokens, session, []):
            yield update

    async def _stream(messages, question, num_frames, use_audio, temperature, max_tokens, session, new):
        """Stream the answer to ``messages``; ``question`` is the text box's content to give back on
        failure (``None``: the text box was not used, as for Regenerate, and is left alone)."""
        box = gr.skip() if question is None else question
        shown = display(messages) + [{"role": "assistant", "content": ""}]
        yield shown, gr.skip() if question is None else "", gr.skip(), "Thinking..."
        reply = ""
        try:
            async for piece in stream_reply(messages, num_frames, use_audio, temperature, max_tokens):
                reply += piece
                shown[-1]["content"] = reply
                yield shown, gr.skip(), gr.skip(), gr.skip()
        except Exception as err:  # shown to the user; the conversation and the question are kept
            gr.Warning(failure_text(err))
            yield display(session["messages"]), box, gr.skip(), f"**{failure_text(err)}**"
            return
        attached = [*session["attached"], *(path for _, path in new)]
        session = {"messages": [*messages, {"role": "assistant", "content": reply}], "attached": attached}
        yield shown, gr.skip(), session, "Done."

    def clear():
        return [], "", empty_session(), "New conversation: the media above will be attached to your next message."

    with gr.Blocks(title=config.title) as demo:
        gr.Markdown(f"# {config.title}\nChat about a video, an audio recording or an image." + (f"\n\n*{config.note}*" if config.note else ""))
        session = gr.State(empty_session())
        with gr.Row(equal_height=False):
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Video"):
                        video = gr.Video(label="Video", sources=["upload", "webcam"], include_audio=True, height=240, elem_id="video-input")
                    with gr.Tab("Audio"):
                        audio = gr.Audio(label="Audio", sources=["upload", "microphone"], type="filepath", elem_id="audio-input")
                    with gr.Tab("Image"):
                        image = gr.Image(label="Image", sources=["upload", "webcam", "clipboard"], type="filepath", height=240, elem_id="image-input")
                status = gr.Markdown("Upload a video, audio or image, or try an example below.", elem_id="media-status")
                frames = gr.Gallery(label="Frames the model sees", columns=4, height=230, elem_id="frames-preview", allow_preview=True)
                waveform = gr.Plot(label="What the model hears (16 kHz waveform)", elem_id="waveform")
                with gr.Accordion("Settings", open=False):
                    num_frames = gr.Slider(1, max_frames, value=model_frames, step=1, label="Frames sampled per video")
                    use_audio = gr.Checkbox(value=engine.media_settings.video_audio, label="Use the video's audio track")
                    temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0 = greedy)")
                    max_tokens = gr.Slider(
                        8, limits.max_new_tokens, value=min(config.max_new_tokens, limits.max_new_tokens), step=8, label="Max new tokens"
                    )
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chatbot", placeholder="Ask about your clip.")
                question = gr.Textbox(label="Question", show_label=False, placeholder="Ask about the clip and press Enter", elem_id="question", lines=1)
                with gr.Row():
                    send = gr.Button("Send", variant="primary", elem_id="send")
                    regen = gr.Button("Regenerate", elem_id="regenerate")
                    clear_btn = gr.Button("Clear", elem_id="clear")
        if config.examples:
            gr.Examples(
                examples=[
                    [str(e.path) if e.kind == "video" else None, str(e.path) if e.kind == "audio" else None, e.question]
                    for e in config.examples
                ],
                inputs=[video, audio, question],
                label="Examples (generated clips)",
            )

        preview_inputs = [video, audio, image, num_frames, use_audio]
        for trigger in (video.change, audio.change, image.change, num_frames.release, use_audio.input):
            trigger(update_preview, preview_inputs, [frames, waveform, status], show_progress="minimal")
        chat_outputs = [chatbot, question, session, status]
        chat_inputs = [question, video, audio, image, num_frames, use_audio, temperature, max_tokens, session]
        send.click(respond, chat_inputs, chat_outputs, show_progress="hidden")
        question.submit(respond, chat_inputs, chat_outputs, show_progress="hidden")
        regen.click(regenerate, [num_frames, use_audio, temperature, max_tokens, session], chat_outputs, show_progress="hidden")
        clear_btn.click(clear, None, chat_outputs, queue=False)
        chatbot.clear(clear, None, chat_outputs, queue=False)  # the chat's own trash button
    demo.queue(default_concurrency_limit=engine.config.max_batch_size, max_size=max(1, engine.config.max_waiting))
    return demo


def mount(app, demo: gr.Blocks, config: UiConfig, *, host: str, port: int, path: str = "/"):
    """Mount the UI on a FastAPI app (beside the HTTP API), with upload limits and the example folder allowed."""
    allowed = sorted({str(Path(e.path).parent) for e in config.examples})
    return gr.mount_gradio_app(
        app,
        demo,
        path=path,
        server_name=host,
        server_port=port,
        max_file_size=config.limits.max_media_bytes,
        allowed_paths=allowed,
        footer_links=[],
        css=CSS,
    )
