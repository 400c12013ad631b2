"""Check that the running lab behaves as imagefs' tests expect (run with /usr/bin/python3).

Run by `lab.sh selftest`, and once by `lab.sh up` after the first setup. Parameters come from the
environment lab.sh sets (LAB_* passwords and URLs, LAB_SMALL_SLO_SEGMENTS, LAB_TOKEN_EXPIRATION).
Never prints a token.

Checks:
  1. /info of both proxies reports slo.max_manifest_segments 1000 and LAB_SMALL_SLO_SEGMENTS.
  2. A demo token's lifetime (expires_at - issued_at) equals LAB_TOKEN_EXPIRATION.
  3. demo token alone: AUTH_<demo> -> 2xx; IMAGE_<demo> -> 403.
  4. demo token + X-Service-Token of imagefs: PUT container and object on IMAGE_<demo> -> 2xx.
  5. imagefs token alone on AUTH_<demo> -> 403.
  6. Trust: demo delegates member on demo to imagefs (impersonation); imagefs gets a trust-scoped token
     with its own password + the trust id and writes to AUTH_<demo>; the trust is deleted and can no
     longer be used.
"""
import datetime
import json
import os
import sys
import time

import requests
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3
from keystoneclient.v3 import client as ks_client

ENV = os.environ
AUTH_URL = ENV["LAB_KEYSTONE_URL"] + "/v3"
SWIFT = ENV["LAB_SWIFT_URL"]
SMALL = ENV["LAB_SMALL_SLO_PROXY_URL"]
FAILED = []


def check(ok, what):
    print("selftest: %s %s" % ("ok  " if ok else "FAIL", what), flush=True)
    if not ok:
        FAILED.append(what)


def session(user, password, project=None, trust_id=None):
    kw = dict(auth_url=AUTH_URL, username=user, password=password, user_domain_id="default",
              reauthenticate=False)
    if trust_id:
        kw["trust_id"] = trust_id
    else:
        kw.update(project_name=project, project_domain_id="default")
    return ks_session.Session(auth=v3.Password(**kw))


def parse_time(s):
    return datetime.datetime.strptime(s.replace("Z", "+0000"), "%Y-%m-%dT%H:%M:%S.%f%z")


def main():
    http = requests.Session()
    test_id = "lab-selftest-%d" % time.time_ns()

    # 1. /info
    for url, want in ((SWIFT, 1000), (SMALL, int(ENV["LAB_SMALL_SLO_SEGMENTS"]))):
        info = http.get(url + "/info", timeout=10).json()
        got = info.get("slo", {}).get("max_manifest_segments")
        check(got == want, "%s/info slo.max_manifest_segments = %s (want %s)" % (url, got, want))

    # 2. token lifetime, from the raw token body (issued_at/expires_at).
    body = {"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "domain": {"id": "default"}, "password": ENV["LAB_DEMO_PASSWORD"]}}},
        "scope": {"project": {"name": "demo", "domain": {"id": "default"}}}}}
    r = http.post(AUTH_URL + "/auth/tokens", json=body, timeout=10)
    tok = r.json()["token"]
    life = (parse_time(tok["expires_at"]) - parse_time(tok["issued_at"])).total_seconds()
    want = int(ENV["LAB_TOKEN_EXPIRATION"])
    check(r.status_code == 201 and round(life) == want,
          "token lifetime %d s (configured %d s)" % (round(life), want))

    demo = session("demo", ENV["LAB_DEMO_PASSWORD"], "demo")
    svc = session("imagefs", ENV["LAB_SERVICE_PASSWORD"], "service")
    demo_token, demo_pid, demo_uid = demo.get_token(), demo.get_project_id(), demo.get_user_id()
    svc_token, svc_uid = svc.get_token(), svc.get_user_id()
    auth_acct = "%s/v1/AUTH_%s" % (SWIFT, demo_pid)
    image_acct = "%s/v1/IMAGE_%s" % (SWIFT, demo_pid)

    # 3. plain user token
    r = http.head(auth_acct, headers={"X-Auth-Token": demo_token}, timeout=10)
    check(r.status_code in (200, 204), "demo token on AUTH_<demo>: HEAD %d" % r.status_code)
    r = http.put(image_acct + "/" + test_id, headers={"X-Auth-Token": demo_token}, timeout=10)
    check(r.status_code == 403, "demo token alone on IMAGE_<demo>: PUT %d (want 403)" % r.status_code)

    # 4. user token + service token
    both = {"X-Auth-Token": demo_token, "X-Service-Token": svc_token}
    r1 = http.put(image_acct + "/" + test_id, headers=both, timeout=10)
    r2 = http.put(image_acct + "/" + test_id + "/obj", headers=both, data=b"hello", timeout=10)
    r3 = http.get(image_acct + "/" + test_id + "/obj", headers=both, timeout=10)
    check(r1.status_code in (201, 202) and r2.status_code == 201 and r3.content == b"hello",
          "demo token + imagefs X-Service-Token on IMAGE_<demo>: PUT container %d, PUT object %d, "
          "GET %d" % (r1.status_code, r2.status_code, r3.status_code))
    http.delete(image_acct + "/" + test_id + "/obj", headers=both, timeout=10)
    http.delete(image_acct + "/" + test_id, headers=both, timeout=10)

    # 5. the service user has no business in demo's account on its own
    r = http.head(auth_acct, headers={"X-Auth-Token": svc_token}, timeout=10)
    check(r.status_code == 403, "imagefs token alone on AUTH_<demo>: HEAD %d (want 403)" % r.status_code)

    # 6. trust
    ks = ks_client.Client(session=demo, interface="public")
    trust = ks.trusts.create(trustee_user=svc_uid, trustor_user=demo_uid, project=demo_pid,
                             role_names=["member"], impersonation=True)
    try:
        tsess = session("imagefs", ENV["LAB_SERVICE_PASSWORD"], trust_id=trust.id)
        ttoken = tsess.get_token()
        access = tsess.auth.get_access(tsess)
        check(tsess.get_project_id() == demo_pid and access.user_id == demo_uid,
              "trust-scoped token: project = demo, user = demo (impersonation)")
        th = {"X-Auth-Token": ttoken}
        r1 = http.put(auth_acct + "/" + test_id, headers=th, timeout=10)
        r2 = http.put(auth_acct + "/" + test_id + "/obj", headers=th, data=b"trust", timeout=10)
        r3 = http.delete(auth_acct + "/" + test_id + "/obj", headers=th, timeout=10)
        r4 = http.delete(auth_acct + "/" + test_id, headers=th, timeout=10)
        check(r1.status_code in (201, 202) and r2.status_code == 201 and r3.status_code == 204
              and r4.status_code == 204,
              "trust-scoped token on AUTH_<demo>: PUT container %d, PUT object %d, DELETE %d, %d"
              % (r1.status_code, r2.status_code, r3.status_code, r4.status_code))
    finally:
        ks.trusts.delete(trust)
    try:
        session("imagefs", ENV["LAB_SERVICE_PASSWORD"], trust_id=trust.id).get_token()
        check(False, "deleted trust can no longer be used")
    except ks_exc.http.HttpError as exc:
        check(True, "deleted trust can no longer be used (%s)" % exc.http_status)

    if FAILED:
        print("selftest: %d check(s) FAILED" % len(FAILED), file=sys.stderr)
        sys.exit(1)
    print("selftest: all checks passed")


if __name__ == "__main__":
    main()
