"""Build the lab's account, container and object rings (run with /usr/bin/python3).

Usage: rings.py SWIFT_DIR

One replica, one device ("d1") per ring, part power 10. Everything is done in one process with
swift.common.ring.RingBuilder: nine swift-ring-builder CLI runs take ~6 s on these machines, this takes
well under one. replication_ip/port are set so `swift-ring-builder X.builder` reports the ring up to date.
Existing rings are left alone.
"""
import os
import sys

from swift.common.ring import RingBuilder

PART_POWER = 10
REPLICAS = 1
MIN_PART_HOURS = 1
PORTS = {"account": 6202, "container": 6201, "object": 6200}


def main():
    swift_dir = sys.argv[1]
    for name, port in PORTS.items():
        ring = os.path.join(swift_dir, name + ".ring.gz")
        builder_file = os.path.join(swift_dir, name + ".builder")
        if os.path.exists(ring) and os.path.exists(builder_file):
            continue
        builder = RingBuilder(PART_POWER, REPLICAS, MIN_PART_HOURS)
        builder.add_dev({
            "id": 0, "region": 1, "zone": 1,
            "ip": "127.0.0.1", "port": port,
            "replication_ip": "127.0.0.1", "replication_port": port,
            "device": "d1", "weight": 100.0, "meta": "",
        })
        builder.rebalance()
        # Write the ring first and the builder last: the builder's presence marks a complete ring.
        builder.get_ring().save(ring)
        builder.save(builder_file)
        print("built %s ring (port %d)" % (name, port))


if __name__ == "__main__":
    main()
