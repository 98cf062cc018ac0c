"""Serving: the web UI (gradio), the OpenAI-compatible HTTP API (FastAPI), both over one ChatEngine.

- :mod:`.engine` ``ChatEngine``: one shared ``ChatModel``, a bounded queue, batched streaming.
- :mod:`.openai_api` ``build_api``: ``/v1/chat/completions`` (SSE and JSON), ``/v1/models``, ``/health``.
- :mod:`.content`: OpenAI content parts (text, image_url, video_url, input_audio) -> ChatModel parts.
- :mod:`.web_ui` ``build_ui``: the gradio app; :mod:`.preview`: sampled frames and waveform.
- :mod:`.server` ``BackgroundServer``: uvicorn in a thread; :mod:`.launch`: the CLI's shared flags.

Modules are imported on use, so ``import mico_chat.serve`` pulls in neither gradio nor FastAPI.
"""
