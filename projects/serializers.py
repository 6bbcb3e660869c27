from typing import Any

from rest_framework import serializers

from projects.access import check_role, visible
from projects.models import Membership, NoSuchUser, Project, Role, user_named


class StrictCharField(serializers.CharField):
    """Text that must arrive as text: DRF's CharField would turn 42 into "42"."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ProjectSerializer(serializers.ModelSerializer):
    name = StrictCharField(max_length=200)
    role = serializers.SerializerMethodField(help_text="Your role in the project.")

    class Meta:
        model = Project
        fields = ["id", "name", "role", "created_at"]

    def get_role(self, project: Project) -> str | None:
        return getattr(project, "member_role", None) or project.role_of(self.context["request"].user)


class MemberSerializer(serializers.ModelSerializer):
    user_id = serializers.IntegerField(source="user.pk", read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)

    class Meta:
        model = Membership
        fields = ["user_id", "username", "role", "created_at"]


class AddMemberSerializer(serializers.Serializer):
    username = StrictCharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.VIEWER)

    def validate_username(self, value: str) -> Any:
        try:
            return user_named(value)
        except NoSuchUser as error:
            raise serializers.ValidationError(str(error)) from None


class ChangeRoleSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class ProjectOwnedSerializer(serializers.ModelSerializer):
    """A serializer of something a project owns (an endpoint, an experiment, a webhook).

    `project` may be left out on create when the caller belongs to exactly one
    project; it cannot change afterwards. Creating needs `create_role` there."""

    create_role = Role.EDITOR
    project = serializers.PrimaryKeyRelatedField(
        queryset=Project.objects.none(), required=False, help_text="Default: your only project."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "project" in self.context:  # a page that checked the role itself (a form)
            self.fields["project"].queryset = Project.objects.filter(pk=self.context["project"].pk)
            return
        user = getattr(self.context.get("request"), "user", None)
        self.fields["project"].queryset = visible(Project.objects.all(), user)

    def my_projects(self) -> Any:
        return self.fields["project"].queryset

    def validate(self, attrs: dict) -> dict:
        attrs = super().validate(attrs)
        if self.instance is not None:
            if "project" in attrs and attrs["project"].pk != self.instance.project_id:
                raise serializers.ValidationError({"project": ["An object cannot move to another project."]})
            attrs.pop("project", None)
            return attrs
        if "project" not in attrs:
            mine = list(self.my_projects()[:2])
            if len(mine) != 1:
                reason = "you belong to no project yet" if not mine else "you belong to several projects"
                raise serializers.ValidationError({"project": [f"Say which project ({reason})."]})
            attrs["project"] = mine[0]
        if "project" not in self.context:
            check_role(attrs["project"].role_of(self.context["request"].user), self.create_role)
        return attrs

    def target_project(self, attrs: dict) -> Project | None:
        """The project an object is (or will be) in, for checks of what it refers to."""
        if self.instance is not None:
            return self.instance.project
        return attrs.get("project")
