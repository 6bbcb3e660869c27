from django.contrib import admin

from runs.models import ResponseCache, Run, Score, StageResult


class StageResultInline(admin.TabularInline):
    model = StageResult
    extra = 0
    fields = [
        "item",
        "sample_index",
        "stage_index",
        "stage_name",
        "output",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "cached",
    ]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


class ScoreInline(admin.TabularInline):
    model = Score
    extra = 0
    fields = ["item", "sample_index", "scorer", "value", "source", "author", "comment"]
    readonly_fields = ["item", "sample_index", "scorer", "value", "source", "author"]


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "experiment",
        "sweep",
        "status",
        "weighted_score",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "created_at",
    ]
    list_filter = ["status", "experiment", "created_at"]
    search_fields = ["config_hash", "error", "experiment__name"]
    list_select_related = ["experiment", "sweep"]
    readonly_fields = ["config_hash", "created_at", "started_at", "finished_at"]
    inlines = [StageResultInline, ScoreInline]


@admin.register(StageResult)
class StageResultAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "run",
        "item",
        "stage_index",
        "stage_name",
        "model",
        "cached",
        "tokens_out",
        "latency_ms",
    ]
    list_filter = ["cached", "stage_name"]
    search_fields = ["output", "user_prompt", "config_hash"]
    list_select_related = ["run", "item"]
    raw_id_fields = ["run", "item"]


@admin.register(Score)
class ScoreAdmin(admin.ModelAdmin):
    list_display = ["id", "run", "item", "scorer", "value", "source", "author", "created_at"]
    list_filter = ["source", "scorer"]
    search_fields = ["scorer", "comment"]
    list_select_related = ["run", "item", "author"]
    raw_id_fields = ["run", "item"]


@admin.register(ResponseCache)
class ResponseCacheAdmin(admin.ModelAdmin):
    list_display = [
        "config_hash",
        "model",
        "tokens_in",
        "tokens_out",
        "hit_count",
        "created_at",
        "last_hit_at",
    ]
    list_filter = ["model", "created_at"]
    search_fields = ["config_hash", "response_text"]
    readonly_fields = ["created_at", "last_hit_at"]
