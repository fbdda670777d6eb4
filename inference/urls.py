"""Every /v1 URL. Model calls go through `pipeline.serve`, which runs the one request path
(authenticate, parse, resolve, check access, admit, queue, route, dispatch, meter: see
inference/pipeline.py); each resource module says only what differs."""

from django.urls import path, re_path

from inference import (
    audio,
    chat,
    completions,
    embeddings,
    images,
    messages,
    models_api,
    pipeline,
    responses,
    videos,
)

urlpatterns = [
    path("models", models_api.models_list),
    path("models/<path:model_id>", models_api.model_detail),
    path("chat/completions", pipeline.serve(chat.CHAT)),
    path("completions", pipeline.serve(completions.COMPLETIONS)),
    path("responses", pipeline.serve(responses.RESPONSES)),
    path("responses/<str:response_id>", responses.detail),
    path("responses/<str:response_id>/input_items", responses.input_items),
    path("embeddings", pipeline.serve(embeddings.EMBEDDINGS)),
    path("images/generations", pipeline.serve(images.GENERATIONS)),
    path("images/variations", pipeline.serve(images.VARIATIONS)),
    re_path(r"^images/content/(?P<token>[A-Za-z0-9_-]{20,64})\.png$", images.content),
    path("audio/transcriptions", pipeline.serve(audio.TRANSCRIPTIONS)),
    path("audio/translations", pipeline.serve(audio.TRANSLATIONS)),
    path("audio/speech", pipeline.serve(audio.SPEECH)),
    path("messages", messages.anthropic(messages.MESSAGES)),
    path("messages/count_tokens", messages.anthropic(messages.COUNT_TOKENS)),
    path("videos", videos.videos),
    re_path(r"^videos/(?P<video_id>[^/]{1,200})/content$", videos.content),
    re_path(r"^videos/(?P<video_id>[^/]{1,200})$", videos.video),
    re_path(r"^(?P<rest>.*)$", pipeline.unknown_url),
]
