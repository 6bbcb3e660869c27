from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException
from rest_framework.request import Request
from rest_framework.response import Response

from projects.access import check_role, visible
from projects.models import AlreadyMember, LastAdmin, Project, Role
from projects.serializers import (
    AddMemberSerializer,
    ChangeRoleSerializer,
    MemberSerializer,
    ProjectSerializer,
)


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The object is not in a state that allows this."
    default_code = "conflict"


class ProjectScopedMixin:
    """A viewset over a project-owned model: rows of other projects do not exist
    (404), and each action needs a role in the object's project (403 below it).

    Reads need `viewer`; writes `write_role`; `action_roles` overrides per action."""

    write_role: str = Role.EDITOR
    action_roles: dict[str, str] = {}

    def get_queryset(self) -> QuerySet:
        return visible(super().get_queryset(), self.request.user)

    def required_role(self) -> str:
        if self.action in self.action_roles:
            return self.action_roles[self.action]
        return Role.VIEWER if self.request.method in permissions.SAFE_METHODS else self.write_role

    def check_object_permissions(self, request: Request, obj: Any) -> None:
        super().check_object_permissions(request, obj)
        check_role(getattr(obj, "member_role", None), self.required_role())

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if self.action == "create":
            self.check_create_role(request)

    def check_create_role(self, request: Request) -> None:
        # The role first: a viewer learns nothing from the validation of what they may not make.
        project = self.project_of_new(request)
        if project is not None:
            check_role(project.member_role, self.required_role())

    def project_of_new(self, request: Request) -> Project | None:
        """The project a create names (or the caller's only one); None leaves it to validation."""
        projects = visible(Project.objects.all(), request.user)
        chosen = request.data.get("project") if hasattr(request.data, "get") else None
        if chosen is None:
            mine = list(projects[:2])
            return mine[0] if len(mine) == 1 else None
        return projects.filter(pk=chosen).first() if str(chosen).isdigit() else None


class ProjectViewSet(ProjectScopedMixin, viewsets.ModelViewSet):
    """Your projects. Anyone may create one and becomes its admin."""

    queryset = Project.objects.all()
    serializer_class = ProjectSerializer
    write_role = Role.ADMIN
    action_roles = {"members": Role.VIEWER, "member": Role.ADMIN}

    def get_queryset(self) -> QuerySet[Project]:
        return super().get_queryset().order_by("name", "id")

    def project_of_new(self, request: Request) -> Project | None:
        return None  # anyone may create a project

    def perform_create(self, serializer: ProjectSerializer) -> None:
        serializer.instance = Project.create_for(self.request.user, serializer.validated_data["name"])

    def perform_destroy(self, instance: Project) -> None:
        owned = [
            name
            for name, related in (
                ("endpoints", instance.endpoints),
                ("experiments", instance.experiments),
                ("webhooks", instance.webhooks),
            )
            if related.exists()
        ]
        if owned:
            raise Conflict(f"The project still has {', '.join(owned)}; delete them first.")
        instance.delete()

    @extend_schema(methods=["get"], responses=MemberSerializer(many=True))
    @extend_schema(methods=["post"], request=AddMemberSerializer, responses={201: MemberSerializer})
    @action(detail=True, methods=["get", "post"], pagination_class=None)
    def members(self, request: Request, pk: str | None = None) -> Response:
        project = self.get_object()
        if request.method == "GET":
            memberships = project.memberships.select_related("user").order_by("user__username")
            return Response(MemberSerializer(memberships, many=True).data)
        check_role(project.member_role, Role.ADMIN)
        serializer = AddMemberSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            membership = project.add_member(
                serializer.validated_data["username"], serializer.validated_data["role"]
            )
        except AlreadyMember as error:
            raise Conflict(str(error)) from None
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    @extend_schema(methods=["patch"], request=ChangeRoleSerializer, responses=MemberSerializer)
    @extend_schema(methods=["delete"], request=None, responses={204: None})
    @action(detail=True, methods=["patch", "delete"], url_path=r"members/(?P<user_id>\d+)")
    def member(self, request: Request, pk: str | None = None, user_id: str | None = None) -> Response:
        project = self.get_object()
        membership = project.memberships.select_related("user").filter(user_id=user_id).first()
        if membership is None:
            return Response({"detail": "No such member."}, status=status.HTTP_404_NOT_FOUND)
        try:
            if request.method == "DELETE":
                membership.remove()
                return Response(status=status.HTTP_204_NO_CONTENT)
            serializer = ChangeRoleSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            membership.change_role(serializer.validated_data["role"])
        except LastAdmin as error:
            raise Conflict(str(error)) from None
        return Response(MemberSerializer(membership).data)
