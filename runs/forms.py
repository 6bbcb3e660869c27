from django import forms
from django.conf import settings

from engine.sweep import MAX_REPEATS, SWEEPS
from experiments.models import Experiment
from runs.serializers import SweepLaunchSerializer
from runs.sweeps import Plan, SweepRequest

SWEEP_HELP = {
    "grid": "every combination of the listed values",
    "random": "a sample of the combinations (ranges allowed)",
    "guided": "random first, then neighbours of the best so far",
    "racing": "every candidate on a slice of the rows; the clear losers drop out each round",
}
RACING_OPTIONS = ("min_items", "eta", "confidence")


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
        help_text="Configurations to try (random and guided sweeps; racing over ranges).",
    )
    seed = forms.IntegerField(required=False, help_text="The same seed draws the same configurations.")
    repeats = forms.IntegerField(
        min_value=1,
        max_value=MAX_REPEATS,
        initial=1,
        help_text="Times each item is asked, to measure the spread.",
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
    min_items = forms.IntegerField(
        label="Racing: first slice",
        required=False,
        min_value=2,
        help_text="Rows every candidate is scored on first (default 10% of the dataset, at least 10).",
    )
    eta = forms.FloatField(
        label="Racing: growth",
        required=False,
        help_text="Each round's slice is this many times larger (default 2: the rows double).",
    )
    confidence = forms.FloatField(
        label="Racing: confidence",
        required=False,
        help_text="How sure a paired test must be that a candidate trails the leader (default 0.95).",
    )
    max_cost = forms.FloatField(
        label="Money budget",
        min_value=0.000001,
        required=False,
        help_text="The sweep stops before its tokens could cost more, priced at the endpoint's dearest rate.",
    )

    def __init__(self, *args, experiment: Experiment, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment = experiment
        self.plan: Plan | None = None
        self.request: SweepRequest | None = None
        self.fields["max_concurrent"].initial = settings.MAX_CONCURRENT_RUNS
        self.fields["max_tokens"].initial = settings.MAX_TOKENS_PER_SWEEP
        self.fields["max_cost"].label = f"Money budget ({settings.CURRENCY})"

    def clean(self) -> dict:
        data = super().clean()
        if self.errors:
            return data
        payload = {k: v for k, v in data.items() if v is not None and k not in RACING_OPTIONS}
        options = {k: data[k] for k in RACING_OPTIONS if data.get(k) is not None}
        if options and data.get("type") == "racing":  # other sweeps have no use for them
            payload["options"] = options
        serializer = SweepLaunchSerializer(data=payload, context={"experiment": self.experiment})
        if not serializer.is_valid():
            for field, messages in serializer.errors.items():
                self.add_error(self.field_named(field, messages), [str(m) for m in messages])
            return data
        self.plan, self.request = serializer.validated_data["plan"], serializer.validated_data["request"]
        return data

    def field_named(self, field: str, messages: list) -> str | None:
        """The form field an API error belongs to: racing options are fields here."""
        if field == "options":
            return next((name for name in RACING_OPTIONS if any(name in str(m) for m in messages)), None)
        return field if field in self.fields else None


class RatingForm(forms.Form):
    rating = forms.TypedChoiceField(
        choices=[(n, str(n)) for n in range(1, 11)],
        coerce=int,
        widget=forms.RadioSelect,
        help_text="1 = useless, 10 = perfect.",
    )
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))
