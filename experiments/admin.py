from django.contrib import admin

from experiments.models import DatasetItem, Experiment


class DatasetItemInline(admin.TabularInline):
    model = DatasetItem
    extra = 0
    fields = ["position", "input", "reference"]


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    list_display = ["name", "project", "endpoint", "stage_count", "item_count", "created_by", "updated_at"]
    list_filter = ["project", "endpoint", "created_at"]
    search_fields = ["name", "description"]
    list_select_related = ["endpoint", "created_by"]
    inlines = [DatasetItemInline]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="stages")
    def stage_count(self, obj: Experiment) -> int:
        return len(obj.pipeline or [])

    @admin.display(description="dataset rows")
    def item_count(self, obj: Experiment) -> int:
        return obj.items.count()


@admin.register(DatasetItem)
class DatasetItemAdmin(admin.ModelAdmin):
    list_display = ["id", "experiment", "position", "reference"]
    list_filter = ["experiment"]
    search_fields = ["reference"]
    list_select_related = ["experiment"]
