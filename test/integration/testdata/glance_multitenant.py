"""Store images with the real glance_store Swift driver in multi-tenant mode.

The account mode test runs this with Debian's python3-glance-store: each
image goes, as Glance's API would put it, into its own container
<prefix>_<uuid> of the user's account (OS_* of the lab's user), as a plain
object or, from --chunk bytes on or when the size is not given, as a DLO
whose segments <uuid>-00001... sit next to the manifest.

Usage: glance_multitenant.py PREFIX SIZE[:unknown]...
Prints one JSON line per image: id, container, size, md5, sha256.
"""
import hashlib
import io
import json
import os
import random
import sys
import uuid

from keystoneauth1 import session
from keystoneauth1.identity import v3
from oslo_config import cfg

import glance_store

CHUNK_MB = 1  # glance_store's "MB" is 1,024,000 bytes


def main():
    prefix, specs = sys.argv[1], sys.argv[2:]
    auth = v3.Password(
        auth_url=os.environ["OS_AUTH_URL"],
        username=os.environ["OS_USERNAME"],
        password=os.environ["OS_PASSWORD"],
        project_name=os.environ["OS_PROJECT_NAME"],
        user_domain_name=os.environ.get("OS_USER_DOMAIN_NAME", "Default"),
        project_domain_name=os.environ.get("OS_PROJECT_DOMAIN_NAME", "Default"),
    )
    sess = session.Session(auth=auth)
    storage_url = sess.get_endpoint(service_type="object-store", interface="public")

    conf = cfg.CONF
    glance_store.register_opts(conf)
    conf([], project="glance", default_config_files=[])
    for k, v in {
        "stores": ["swift"],
        "default_store": "swift",
        "swift_store_multi_tenant": True,
        "swift_store_use_trusts": False,
        "swift_store_container": prefix,
        "swift_store_create_container_on_put": True,
        "swift_store_large_object_size": CHUNK_MB,
        "swift_store_large_object_chunk_size": CHUNK_MB,
    }.items():
        conf.set_override(k, v, "glance_store")
    glance_store.create_stores(conf)
    glance_store.verify_default_store()

    class Context:  # what glance's RequestContext gives the store
        auth_token = sess.get_token()
        project_id = sess.get_project_id()
        user_id = sess.get_user_id()
        service_catalog = [{"type": "object-store", "name": "swift",
                            "endpoints": [{"publicURL": storage_url, "region": "RegionOne"}]}]

    for i, spec in enumerate(specs):
        size_s, _, mode = spec.partition(":")
        size = int(size_s)
        data = random.Random(i + 1).randbytes(size)
        image_id = str(uuid.uuid4())
        given = 0 if mode == "unknown" else size
        loc, written, md5, multihash, _ = glance_store.add_to_backend_with_multihash(
            conf, image_id, io.BytesIO(data), given, "sha256", context=Context())
        assert written == size, (written, size)
        assert multihash == hashlib.sha256(data).hexdigest()
        print(json.dumps({"id": image_id, "container": prefix + "_" + image_id, "location": loc,
                          "size": size, "md5": md5, "sha256": multihash}), flush=True)


if __name__ == "__main__":
    main()
