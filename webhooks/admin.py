from django.contrib import admin

from webhooks.models import Webhook, WebhookDelivery


class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    extra = 0
    fields = ["event", "status", "attempts", "response_status", "error", "created_at"]
    readonly_fields = fields
    can_delete = False
    show_change_link = True


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    list_display = ["__str__", "project", "url", "active", "events", "updated_at"]
    list_filter = ["project", "active"]
    search_fields = ["name", "url"]
    inlines = [WebhookDeliveryInline]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ["id", "webhook", "event", "status", "attempts", "response_status", "created_at"]
    list_filter = ["status", "event"]
    search_fields = ["event", "error", "webhook__url"]
    list_select_related = ["webhook"]
    readonly_fields = ["attempt_log", "claimed_at", "finished_at", "created_at", "updated_at"]
