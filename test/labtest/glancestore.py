#!/usr/bin/python3
"""Drives the real glance_store Swift driver (Debian python3-glance-store)
the way a Glance API server configures it, for imagefs's Glance interop
tests (test/labtest/glance.go runs it).

    glancestore.py --mode single|multi --container C [--chunk-mb N] OP ...

OPs, each printing one JSON object on stdout:
    add IMAGE_ID FILE  store FILE as image IMAGE_ID (glance_store's add, as
                       Glance's image upload does): location, size, checksum
                       (MD5) and os_hash_value (SHA-512)
    get URL            read the image at location URL (glance_store's get and
                       get_size, as Glance's image download does): size,
                       get_size, checksum and os_hash_value of the bytes read
    delete URL         delete the image at URL (glance_store's delete, as
                       Glance's image delete does)

Credentials come from the lab's OS_* environment. --mode single is a
single-tenant store: one container (--container, Glance's
swift_store_container) in the account of swift_store_config_file's
reference "ref", locations swift+config://ref/C/<id>. --mode multi is a
multi-tenant store (swift_store_multi_tenant): each image in container
C_<id> of the requesting user's account, whose token and catalog come with
the request context, locations swift+http://<storage url>/C_<id>/<id>.
Images of at least --chunk-mb MB (glance_store's MB: 1,024,000 bytes) are
stored as DLOs of chunks of that size (swift_store_large_object_size and
_chunk_size).

Errors go to stderr as one line, exit status 1; no secret is printed.
"""

import argparse
import hashlib
import json
import os
import sys
import tempfile


def fail(msg):
    print("glancestore.py: " + msg, file=sys.stderr)
    sys.exit(1)


def env(name):
    v = os.environ.get(name)
    if not v:
        fail("%s is not set: eval \"$(test/lab/lab.sh env)\" first" % name)
    return v


def session():
    from keystoneauth1 import session as ks_session
    from keystoneauth1.identity import v3
    auth = v3.Password(auth_url=env("OS_AUTH_URL"), username=env("OS_USERNAME"), password=env("OS_PASSWORD"),
                       user_domain_name=env("OS_USER_DOMAIN_NAME"), project_name=env("OS_PROJECT_NAME"),
                       project_domain_name=env("OS_PROJECT_DOMAIN_NAME"), reauthenticate=False)
    return ks_session.Session(auth=auth)


def request_context():
    """The context Glance's API builds from a user's request: the user's
    token and, from keystonemiddleware, the catalog in the v2 format."""
    from oslo_context import context
    sess = session()
    access = sess.auth.get_access(sess)
    catalog = []
    for svc in access.service_catalog.catalog:
        eps = {}
        for ep in svc.get("endpoints", []):
            e = eps.setdefault(ep.get("region_id") or ep.get("region"), {"region": ep.get("region_id") or ep.get("region")})
            e[ep["interface"] + "URL"] = ep["url"]
        catalog.append({"type": svc["type"], "name": svc.get("name", ""), "endpoints": list(eps.values())})
    ctx = context.RequestContext(auth_token=access.auth_token, user_id=access.user_id, project_id=access.project_id)
    ctx.service_catalog = catalog
    return ctx


def configure(args, tmp):
    from glance_store import backend
    from oslo_config import cfg
    conf = cfg.CONF  # glance_store reads the global one, as in Glance
    backend.register_opts(conf)
    chunk = str(args.chunk_mb)
    lines = ["[glance_store]", "stores = swift", "default_store = swift",
             "swift_store_container = " + args.container,
             "swift_store_create_container_on_put = True",
             "swift_store_large_object_size = " + chunk,
             "swift_store_large_object_chunk_size = " + chunk,
             "swift_store_region = " + os.environ.get("OS_REGION_NAME", "RegionOne")]
    if args.mode == "single":
        ref = os.path.join(tmp, "glance-swift.conf")
        with open(os.open(ref, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write("\n".join(["[ref]", "auth_address = " + env("OS_AUTH_URL"),
                               "auth_version = 3",
                               "user = %s:%s" % (env("OS_PROJECT_NAME"), env("OS_USERNAME")),
                               "key = " + env("OS_PASSWORD"),
                               "user_domain_name = " + env("OS_USER_DOMAIN_NAME"),
                               "project_domain_name = " + env("OS_PROJECT_DOMAIN_NAME"), ""]))
        lines += ["default_swift_reference = ref", "swift_store_config_file = " + ref]
    else:
        lines += ["swift_store_multi_tenant = True"]
    path = os.path.join(tmp, "glance-api.conf")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    conf(args=[], project="glance", default_config_files=[path])
    backend.create_stores(conf)
    backend.verify_default_store()
    return conf


def digest(chunks):
    md5, sha512, n = hashlib.md5(), hashlib.sha512(), 0
    for c in chunks:
        md5.update(c)
        sha512.update(c)
        n += len(c)
    return n, md5.hexdigest(), sha512.hexdigest()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["single", "multi"], required=True)
    p.add_argument("--container", required=True)
    p.add_argument("--chunk-mb", type=int, default=200)
    p.add_argument("op", choices=["add", "get", "delete"])
    p.add_argument("rest", nargs="*")
    args = p.parse_args()
    from glance_store import backend, exceptions
    with tempfile.TemporaryDirectory() as tmp:
        conf = configure(args, tmp)
        ctx = request_context() if args.mode == "multi" else None
        try:
            if args.op == "add":
                image_id, path = args.rest
                size = os.path.getsize(path)
                with open(path, "rb") as f:
                    loc, n, checksum, multihash, _ = backend.add_to_backend_with_multihash(
                        conf, image_id, f, size, "sha512", context=ctx)
                out = {"location": loc, "size": n, "checksum": checksum, "os_hash_value": multihash}
            elif args.op == "get":
                (url,) = args.rest
                data, size = backend.get_from_backend(url, context=ctx)
                n, md5, sha512 = digest(data)
                out = {"size": size, "read": n, "get_size": backend.get_size_from_backend(url, context=ctx),
                       "checksum": md5, "os_hash_value": sha512}
            else:
                (url,) = args.rest
                backend.delete_from_backend(url, context=ctx)
                out = {}
        except exceptions.GlanceStoreException as e:
            fail("%s %s: %s: %s" % (args.op, " ".join(args.rest), type(e).__name__, e))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
