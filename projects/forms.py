from django import forms
from django.contrib.auth import get_user_model

from projects.models import Role


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    def clean_username(self):
        username = self.cleaned_data["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise forms.ValidationError(f"No user named '{username}'; an administrator creates accounts.")
        return user


class ChangeMemberForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, required=False)
    remove = forms.BooleanField(required=False)
