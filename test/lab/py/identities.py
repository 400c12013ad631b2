"""Create the lab's Keystone identities and the object-store endpoints (run with /usr/bin/python3).

Idempotent: whatever already exists is left alone (passwords are never reset, because Keystone revokes a
user's tokens when its password changes). Reads its parameters from the environment that lab.sh sets:
LAB_KEYSTONE_URL, LAB_SWIFT_URL, LAB_ADMIN_PASSWORD, LAB_DEMO_PASSWORD, LAB_SERVICE_PASSWORD,
LAB_SWIFT_PASSWORD.

Identities (domain Default):
  project demo:    user demo    - role member
  project service: user imagefs - roles service and member (member: password mode can use AUTH_<service>)
                   user swift   - role service (Swift's authtoken validates tokens with it)
"""
import os
import sys

from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client

DOMAIN = "default"
REGION = "RegionOne"


def main():
    env = os.environ
    auth_url = env["LAB_KEYSTONE_URL"] + "/v3"
    # reauthenticate=False: keystoneauth1 otherwise re-authenticates before every call when the token
    # lifetime is <= 120 s (its MIN_TOKEN_LIFE_SECONDS).
    auth = v3.Password(auth_url=auth_url, username="admin", password=env["LAB_ADMIN_PASSWORD"],
                       project_name="admin", user_domain_id=DOMAIN, project_domain_id=DOMAIN,
                       reauthenticate=False)
    ks = ks_client.Client(session=ks_session.Session(auth=auth), interface="public")

    def log(msg):
        print("identities: " + msg, flush=True)

    roles = {}
    for name in ("member", "reader", "service", "admin"):
        found = ks.roles.list(name=name)
        roles[name] = found[0] if found else ks.roles.create(name=name)
        if not found:
            log("created role " + name)

    projects = {}
    for name in ("demo", "service"):
        found = ks.projects.list(name=name, domain=DOMAIN)
        if found:
            projects[name] = found[0]
        else:
            projects[name] = ks.projects.create(name=name, domain=DOMAIN,
                                                description="imagefs lab")
            log("created project " + name)

    users = {
        # name: (password, project, roles)
        "demo": (env["LAB_DEMO_PASSWORD"], "demo", ["member"]),
        "imagefs": (env["LAB_SERVICE_PASSWORD"], "service", ["service", "member"]),
        "swift": (env["LAB_SWIFT_PASSWORD"], "service", ["service"]),
    }
    for name, (password, project, role_names) in users.items():
        found = ks.users.list(name=name, domain=DOMAIN)
        if found:
            user = found[0]
        else:
            user = ks.users.create(name=name, domain=DOMAIN, password=password,
                                   default_project=projects[project])
            log("created user " + name)
        for role in role_names:
            # A grant is a PUT: repeating it is harmless.
            ks.roles.grant(roles[role], user=user, project=projects[project])

    # Object-store service and its endpoints (bootstrap only creates the identity ones).
    found = ks.services.list(type="object-store")
    service = found[0] if found else ks.services.create(name="swift", type="object-store",
                                                        description="imagefs lab Swift")
    if not found:
        log("created service object-store")
    url = env["LAB_SWIFT_URL"] + "/v1/AUTH_%(project_id)s"
    for interface in ("public", "internal", "admin"):
        found = ks.endpoints.list(service=service, interface=interface, region=REGION)
        if not found:
            ks.endpoints.create(service=service, url=url, interface=interface, region=REGION)
            log("created %s object-store endpoint" % interface)
        elif found[0].url != url:
            ks.endpoints.update(found[0], url=url)
            log("updated %s object-store endpoint" % interface)
    log("ok")


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:  # a short message is more useful in lab.sh's output than a traceback
        print("identities: FAILED: %s: %s" % (type(exc).__name__, exc), file=sys.stderr)
        raise
