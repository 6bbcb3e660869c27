from django import forms
from django.conf import settings

from engine.sweep import SWEEPS
from experiments.models import Experiment
from runs.serializers import SweepLaunchSerializer
from runs.sweeps import Plan, SweepRequest

SWEEP_HELP = {
    "grid": "every combination of the listed values",
    "random": "a sample of the combinations (ranges allowed)",
    "guided": "random first, then neighbours of the best so far",
}


class LaunchForm(forms.Form):
    """Checked and planned by the API's SweepLaunchSerializer, whose fields these are,
    so an error lands at the field it names; `plan` and `request` hold the result."""

    type = forms.ChoiceField(
        label="Sweep type",
        choices=[(name, f"{name}: {SWEEP_HELP.get(name, '')}".rstrip(": ")) for name in SWEEPS],
        initial="grid",
        widget=forms.RadioSelect,
    )
    n_samples = forms.IntegerField(
        label="Samples",
        required=False,
        min_value=1,
        help_text="Configurations to try (random and guided sweeps).",
    )
    seed = forms.IntegerField(required=False, help_text="The same seed draws the same configurations.")
    repeats = forms.IntegerField(
        min_value=1, max_value=100, initial=1, help_text="Times each item is asked, to measure the spread."
    )
    max_concurrent = forms.IntegerField(
        label="Concurrency",
        min_value=1,
        required=False,
        help_text="Runs evaluated at once.",
    )
    max_tokens = forms.IntegerField(
        label="Token budget",
        min_value=1,
        required=False,
        help_text="The sweep stops once it has used this many tokens.",
    )

    def __init__(self, *args, experiment: Experiment, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment = experiment
        self.plan: Plan | None = None
        self.request: SweepRequest | None = None
        self.fields["max_concurrent"].initial = settings.MAX_CONCURRENT_RUNS
        self.fields["max_tokens"].initial = settings.MAX_TOKENS_PER_SWEEP

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        payload = {key: value for key, value in data.items() if value is not None}
        serializer = SweepLaunchSerializer(data=payload, context={"experiment": self.experiment})
        if not serializer.is_valid():
            for field, messages in serializer.errors.items():
                self.add_error(field if field in self.fields else None, [str(m) for m in messages])
            return data
        self.plan, self.request = serializer.validated_data["plan"], serializer.validated_data["request"]
        return data


class RatingForm(forms.Form):
    rating = forms.TypedChoiceField(
        choices=[(n, str(n)) for n in range(1, 11)],
        coerce=int,
        widget=forms.RadioSelect,
        help_text="1 = useless, 10 = perfect.",
    )
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
