import json

import django.db.models.deletion
from django.db import migrations, models


def encrypt_headers(apps, schema_editor):
    """Header values may carry keys: they are encrypted like the API key, names kept apart."""
    from endpoints import crypto

    Endpoint = apps.get_model("endpoints", "Endpoint")
    for endpoint in Endpoint.objects.exclude(extra_headers={}):
        headers = dict(endpoint.extra_headers or {})
        endpoint.extra_headers_encrypted = crypto.encrypt(json.dumps(headers)) if headers else ""
        endpoint.extra_header_names = sorted(headers)
        endpoint.save(update_fields=["extra_headers_encrypted", "extra_header_names"])


def decrypt_headers(apps, schema_editor):
    from endpoints import crypto

    Endpoint = apps.get_model("endpoints", "Endpoint")
    for endpoint in Endpoint.objects.exclude(extra_headers_encrypted=""):
        endpoint.extra_headers = json.loads(crypto.decrypt(endpoint.extra_headers_encrypted))
        endpoint.save(update_fields=["extra_headers"])


class Migration(migrations.Migration):

    dependencies = [
        ('endpoints', '0002_endpoint_extra_header_names_and_more'),
        ('projects', '0002_default_project'),
    ]

    operations = [
        migrations.RunPython(encrypt_headers, decrypt_headers),
        migrations.RemoveField(
            model_name='endpoint',
            name='extra_headers',
        ),
        migrations.AlterField(
            model_name='endpoint',
            name='name',
            field=models.CharField(max_length=100),
        ),
        migrations.AlterField(
            model_name='endpoint',
            name='project',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='endpoints', to='projects.project'),
        ),
        migrations.AddConstraint(
            model_name='endpoint',
            constraint=models.UniqueConstraint(fields=('project', 'name'), name='endpoint_name_unique_per_project'),
        ),
    ]
