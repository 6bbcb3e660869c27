"""Projects and members over the API: anyone makes a project and runs it; admins
manage members; objects name their project, and a project never reaches another's."""

import pytest
from rest_framework.test import APIClient

from endpoints.models import Endpoint
from projects.models import LastAdmin, Membership, Project, Role
from tests.api.helpers import STUB_PIPELINE
from tests.factories import add_member, make_endpoint, make_project, make_user, team_project

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_anyone_creates_a_project_and_becomes_its_admin(bob_api, bob):
    response = bob_api.post("/api/projects/", {"name": "Bob's lab"}, format="json")
    assert response.status_code == 201 and response.json()["role"] == "admin"
    project = Project.objects.get(name="Bob's lab")
    assert project.role_of(bob) == Role.ADMIN
    names = [p["name"] for p in bob_api.get("/api/projects/").json()["results"]]
    assert names == ["Bob's lab", "Team"]


def test_a_project_lists_only_to_its_members(api, db):
    make_project("Hidden", mallory="admin")
    assert [p["name"] for p in api.get("/api/projects/").json()["results"]] == ["Team"]


def test_admins_add_change_and_remove_members(api, alice):
    charlie = make_user("charlie")
    team = team_project()
    url = f"/api/projects/{team.pk}/members/"
    response = api.post(url, {"username": "charlie", "role": "viewer"}, format="json")
    assert response.status_code == 201 and response.json()["username"] == "charlie"
    assert api.post(url, {"username": "charlie"}, format="json").status_code == 409
    assert api.post(url, {"username": "nobody"}, format="json").json() == {
        "username": ["No user named 'nobody'; an administrator creates accounts."]
    }
    assert api.patch(f"{url}{charlie.pk}/", {"role": "editor"}, format="json").json()["role"] == "editor"
    assert api.patch(f"{url}{charlie.pk}/", {"role": "owner"}, format="json").status_code == 400
    assert [m["username"] for m in api.get(url).json()] == ["alice", "charlie"]
    assert api.delete(f"{url}{charlie.pk}/").status_code == 204
    assert not Membership.objects.filter(user=charlie).exists()


def test_the_last_admin_can_be_neither_demoted_nor_removed(api, alice):
    url = f"/api/projects/{team_project().pk}/members/{alice.pk}/"
    assert api.patch(url, {"role": "editor"}, format="json").status_code == 409
    assert api.delete(url).status_code == 409
    assert team_project().role_of(alice) == Role.ADMIN


def test_editors_read_members_but_only_admins_change_them(bob_api, bob, alice):
    url = f"/api/projects/{team_project().pk}/members/"
    assert bob_api.get(url).status_code == 200
    assert bob_api.post(url, {"username": "bob", "role": "admin"}, format="json").status_code == 403
    assert bob_api.patch(f"{url}{bob.pk}/", {"role": "admin"}, format="json").status_code == 403
    assert team_project().role_of(bob) == Role.EDITOR


def test_a_project_with_things_in_it_is_not_deleted(api):
    make_endpoint()
    assert api.delete(f"/api/projects/{team_project().pk}/").status_code == 409
    empty = api.post("/api/projects/", {"name": "Scratch"}, format="json").json()
    assert api.delete(f"/api/projects/{empty['id']}/").status_code == 204


def test_the_project_may_be_left_out_by_a_member_of_one_project(api):
    response = api.post("/api/endpoints/", {"name": "e", "base_url": "http://127.0.0.1:9/v1"}, format="json")
    assert response.status_code == 201 and response.json()["project"] == team_project().pk


def test_a_member_of_several_projects_must_say_which(api, alice):
    other = make_project("Second")
    add_member(other, alice, Role.ADMIN)
    body = {"name": "e", "base_url": "http://127.0.0.1:9/v1"}
    response = api.post("/api/endpoints/", body, format="json")
    assert response.status_code == 400
    assert response.json() == {"project": ["Say which project (you belong to several projects)."]}
    created = api.post("/api/endpoints/", {**body, "project": other.pk}, format="json").json()
    assert Endpoint.objects.get(pk=created["id"]).project == other


def test_an_object_cannot_move_to_another_project(api, alice):
    other = make_project("Second")
    add_member(other, alice, Role.ADMIN)
    endpoint = make_endpoint()
    response = api.patch(f"/api/endpoints/{endpoint.pk}/", {"project": other.pk}, format="json")
    assert response.status_code == 400 and "project" in response.json()


def test_an_experiment_uses_its_own_projects_endpoints_only(api, alice):
    other = make_project("Second")
    add_member(other, alice, Role.ADMIN)
    foreign = make_endpoint("elsewhere", project=other)
    body = {"project": team_project().pk, "name": "x", "pipeline": STUB_PIPELINE, "endpoint": foreign.pk}
    response = api.post("/api/experiments/", body, format="json")
    assert response.status_code == 400
    assert "belongs to another project" in response.json()["endpoint"][0]


def test_an_endpoint_of_a_project_you_are_not_in_does_not_exist(api):
    foreign = make_endpoint("theirs", project=make_project("Theirs", mallory="admin"))
    body = {"name": "x", "pipeline": STUB_PIPELINE, "endpoint": foreign.pk}
    response = api.post("/api/experiments/", body, format="json")
    assert response.status_code == 400 and "does not exist" in response.json()["endpoint"][0]


def test_endpoint_names_are_unique_within_a_project_only(api):
    make_endpoint("vllm", project=make_project("Theirs", mallory="admin"))
    body = {"name": "vllm", "base_url": "http://127.0.0.1:9/v1"}
    assert api.post("/api/endpoints/", body, format="json").status_code == 201
    response = api.post("/api/endpoints/", body, format="json")
    assert response.status_code == 400 and response.json() == {
        "name": ["The project already has an endpoint 'vllm'."]
    }


def test_a_viewer_is_refused_before_the_body_is_even_read(db):
    viewer = make_user("victor")
    add_member(team_project(), viewer, Role.VIEWER)
    response = client_for(viewer).post("/api/experiments/", {}, format="json")
    assert response.status_code == 403
    assert "editor" in response.json()["detail"]


def test_adding_a_member_twice_is_a_conflict_and_keeps_the_first_role(api, alice):
    make_user("charlie")
    url = f"/api/projects/{team_project().pk}/members/"
    assert api.post(url, {"username": "charlie", "role": "editor"}, format="json").status_code == 201
    # No look-before-create: the second add reaches the unique constraint, as a racing one would.
    response = api.post(url, {"username": "charlie", "role": "admin"}, format="json")
    assert response.status_code == 409
    assert response.json() == {"detail": "charlie is already a member; change their role instead."}
    assert team_project().memberships.get(user__username="charlie").role == Role.EDITOR


def test_two_admins_demoting_each_other_leave_one_admin(alice, bob):
    team = team_project()
    team.memberships.filter(user=bob).update(role=Role.ADMIN)
    # Both read while the other was still an admin, as two requests at once would.
    hers, his = team.memberships.get(user=alice), team.memberships.get(user=bob)
    hers.change_role(Role.EDITOR)
    with pytest.raises(LastAdmin):
        his.change_role(Role.VIEWER)
    with pytest.raises(LastAdmin):
        his.remove()
    assert team_project().role_of(bob) == Role.ADMIN
