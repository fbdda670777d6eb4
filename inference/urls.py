from django.urls import path, re_path

from inference import endpoints, views

urlpatterns = [
    path("models", views.models_list),
    path("models/<path:model_id>", views.model_detail),
    path("chat/completions", views.chat_completions),
    path("completions", endpoints.completions),
    path("embeddings", endpoints.embeddings),
    path("images/generations", endpoints.image_generations),
    path("images/variations", endpoints.image_variations),
    re_path(r"^images/content/(?P<token>[A-Za-z0-9_-]{20,64})\.png$", endpoints.image_content),
    path("audio/transcriptions", endpoints.transcriptions),
    path("audio/translations", endpoints.translations),
    path("audio/speech", endpoints.speech),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
