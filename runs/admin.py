from django.contrib import admin

from experiments.admin import ExperimentAdmin
from experiments.models import Experiment
from runs.models import ResponseCache, Run, Score, StageResult, Sweep


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


class SweepInline(admin.TabularInline):
    model = Sweep
    extra = 0
    fields = ["type", "status", "total_runs", "completed_runs", "failed_runs", "tokens_used", "created_at"]
    readonly_fields = fields
    show_change_link = True
    can_delete = False


# An experiment's admin page lists its sweeps: runs sits above experiments, so the
# sweeps are added here, to the experiments app's own admin.
admin.site.unregister(Experiment)


@admin.register(Experiment)
class ExperimentWithSweepsAdmin(ExperimentAdmin):
    inlines = [*ExperimentAdmin.inlines, SweepInline]


@admin.register(Sweep)
class SweepAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "experiment",
        "type",
        "status",
        "total_runs",
        "completed_runs",
        "failed_runs",
        "cancelled_runs",
        "tokens_used",
        "token_budget",
        "created_at",
    ]
    list_filter = ["status", "type", "experiment"]
    search_fields = ["experiment__name", "error"]
    list_select_related = ["experiment"]
    readonly_fields = ["created_at", "started_at", "finished_at"]
