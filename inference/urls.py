from django.urls import path, re_path

from inference import views

urlpatterns = [
    path("models", views.models_list),
    path("models/<path:model_id>", views.model_detail),
    path("chat/completions", views.chat_completions),
    re_path(r"^(?P<rest>.*)$", views.not_found),
]
