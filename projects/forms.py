from django import forms

from projects.models import NoSuchUser, Role, user_named


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=200)


class AddMemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER)

    def clean_username(self):
        try:
            return user_named(self.cleaned_data["username"])
        except NoSuchUser as error:
            raise forms.ValidationError(str(error)) from None


class ChangeMemberForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, required=False)
    remove = forms.BooleanField(required=False)
