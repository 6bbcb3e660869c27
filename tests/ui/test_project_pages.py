"""Project pages: make one, switch between them, and manage members as an admin."""

import pytest
from django.urls import reverse

from projects.models import Project, Role
from tests.factories import add_member, make_endpoint, make_experiment, make_project, make_user, team_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def as_alice(client, alice):
    client.force_login(alice)
    return client


def test_a_new_project_is_made_and_opened(as_alice, alice):
    response = as_alice.post(reverse("ui:project_list"), {"name": "Lab"}, follow=True)
    assert b"Created project &#x27;Lab&#x27;; you are its admin." in response.content
    assert Project.objects.get(name="Lab").role_of(alice) == Role.ADMIN
    assert b"In the project <strong>Lab</strong>" in response.content


def test_the_switcher_shows_one_projects_things_at_a_time(as_alice, alice):
    lab = make_project("Lab")
    add_member(lab, alice, Role.ADMIN)
    make_experiment(name="Team thing")
    make_experiment(name="Lab thing", project=lab)
    as_alice.post(reverse("ui:switch_project"), {"project": lab.pk, "next": "/"})
    page = as_alice.get(reverse("ui:dashboard")).content
    assert b"Lab thing" in page and b"Team thing" not in page
    as_alice.post(
        reverse("ui:switch_project"), {"project": team_project().pk, "next": "https://evil.example/"}
    )
    page = as_alice.get(reverse("ui:dashboard")).content
    assert b"Team thing" in page and b"Lab thing" not in page


def test_switching_to_a_project_you_are_not_in_is_404(as_alice):
    theirs = make_project("Theirs", mallory="admin")
    assert as_alice.post(reverse("ui:switch_project"), {"project": theirs.pk}).status_code == 404


def test_admins_add_change_and_remove_members(as_alice):
    make_user("charlie")
    url = reverse("ui:members", args=[team_project().pk])
    response = as_alice.post(url, {"username": "charlie", "role": "viewer"}, follow=True)
    assert b"Added charlie as viewer." in response.content
    charlie = team_project().memberships.get(user__username="charlie")
    change = reverse("ui:member_change", args=[team_project().pk, charlie.user_id])
    as_alice.post(change, {"role": "editor"})
    assert team_project().memberships.get(user__username="charlie").role == "editor"
    as_alice.post(change, {"remove": "on"})
    assert not team_project().memberships.filter(user__username="charlie").exists()


def test_adding_a_member_twice_says_so_on_the_form(as_alice):
    make_user("charlie")
    url = reverse("ui:members", args=[team_project().pk])
    as_alice.post(url, {"username": "charlie", "role": "viewer"})
    response = as_alice.post(url, {"username": "charlie", "role": "admin"})
    assert response.status_code == 200
    assert "charlie is already a member; change their role instead." in response.content.decode()
    assert team_project().memberships.get(user__username="charlie").role == Role.VIEWER


def test_the_last_admin_stays(as_alice, alice):
    change = reverse("ui:member_change", args=[team_project().pk, alice.pk])
    response = as_alice.post(change, {"remove": "on"}, follow=True)
    assert b"The project needs an admin" in response.content
    assert team_project().role_of(alice) == Role.ADMIN


def test_an_editor_cannot_open_the_members_page(client, bob):
    client.force_login(bob)
    assert client.get(reverse("ui:members", args=[team_project().pk])).status_code == 403


def test_the_editor_offers_only_the_projects_endpoints(as_alice):
    make_endpoint("ours")
    make_endpoint("theirs", project=make_project("Theirs", mallory="admin"))
    page = as_alice.get(reverse("ui:experiment_create")).content.decode()
    assert ">ours<" in page and ">theirs<" not in page


def test_a_viewer_sees_no_buttons_for_what_they_may_not_do(client, db):
    viewer = make_user("victor")
    add_member(team_project(), viewer, Role.VIEWER)
    make_endpoint("ours")
    client.force_login(viewer)
    dashboard = client.get(reverse("ui:dashboard")).content.decode()
    assert "New experiment" not in dashboard and "you are viewer" in dashboard
    endpoints = client.get(reverse("ui:endpoint_list")).content.decode()
    assert "Add endpoint" not in endpoints and "/endpoints/" in endpoints
