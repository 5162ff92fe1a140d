"""Consumer groups with kafka-python against a Chorus broker.

usage: groups.py BOOTSTRAP TOPIC GROUP STRATEGY PHASE
  PHASE "run":    create the topic (6 partitions) through the admin API, produce 60 keyed
                  messages, run 3 consumers with STRATEGY (range|roundrobin|sticky), check
                  each gets 2 partitions and together they read everything, commit, stop one
                  and check the other two take over 3 partitions each, then check the group
                  and its offsets through the admin API.
  PHASE "verify": after a broker restart, the committed offsets are still there and a new
                  consumer of the group resumes from them (reads nothing old).
Exits non-zero with a message on the first failed check.
"""

import sys
import threading
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

BOOTSTRAP, TOPIC, GROUP, STRATEGY, PHASE = sys.argv[1:6]
ASSIGNORS = {
    "range": RangePartitionAssignor,
    "roundrobin": RoundRobinPartitionAssignor,
    "sticky": StickyPartitionAssignor,
}


def group_ids(admin):
    """Group ids from ListGroups (kafka-python 3 renamed the admin calls)."""
    if hasattr(admin, "list_groups"):
        listed = admin.list_groups()
    else:
        listed = admin.list_consumer_groups()
    return [g["group_id"] if isinstance(g, dict) else g[0] for g in listed]


def describe(admin, group):
    """(state, member count) from DescribeGroups."""
    if hasattr(admin, "describe_groups"):
        d = admin.describe_groups([group])[group]
        return d.get("group_state"), len(d.get("members", []))
    d = admin.describe_consumer_groups([group])[0]
    return d.state, len(d.members)


def committed(admin, group):
    """{TopicPartition: OffsetAndMetadata} from OffsetFetch."""
    if hasattr(admin, "list_group_offsets"):
        return admin.list_group_offsets({group: None})[group]
    return admin.list_consumer_group_offsets(group)


def fail(message):
    print("FAIL:", message, flush=True)
    sys.exit(1)


def wait_for(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    fail("timed out waiting for " + what)


class Member(threading.Thread):
    """One consumer polling on its own thread; records what it reads and owns."""

    def __init__(self):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(
            TOPIC,
            bootstrap_servers=BOOTSTRAP,
            group_id=GROUP,
            partition_assignment_strategy=[ASSIGNORS[STRATEGY]],
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            fetch_max_wait_ms=100,
        )
        self.received = []
        self.owned = set()
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop_flag.is_set():
            batches = self.consumer.poll(timeout_ms=100)
            with self.lock:
                self.owned = {tp.partition for tp in self.consumer.assignment()}
                for records in batches.values():
                    for r in records:
                        self.received.append((r.partition, r.offset, r.key, r.value))
            if batches:
                self.consumer.commit()
        self.consumer.close()

    def partitions(self):
        with self.lock:
            return set(self.owned)


def run():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=1)])
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    for i in range(60):
        producer.send(TOPIC, key=b"k%d" % i, value=b"m%d" % i)
    producer.flush(timeout=30)
    producer.close()

    members = [Member() for _ in range(3)]
    for m in members:
        m.start()

    def shares(sizes):
        owned = [m.partitions() for m in members]
        union = set().union(*owned)
        return sorted(len(o) for o in owned) == sizes and len(union) == 6 and sum(map(len, owned)) == 6

    wait_for("2 partitions each", lambda: shares([2, 2, 2]))
    wait_for("all 60 messages", lambda: sum(len(m.received) for m in members) >= 60)
    seen = sorted(v for m in members for (_, _, _, v) in m.received)
    if len(set(seen)) != 60:
        fail("expected 60 distinct messages, got %d" % len(set(seen)))

    leaving = members.pop()
    leaving.stop_flag.set()
    leaving.join(timeout=30)
    started = time.time()
    wait_for("3 partitions each after a member left", lambda: shares([3, 3]))
    if time.time() - started > 6:
        fail("the rebalance took longer than the session timeout")

    groups = group_ids(admin)
    if GROUP not in groups:
        fail("ListGroups lacks %s: %s" % (GROUP, groups))
    state, members_count = describe(admin, GROUP)
    if state != "Stable" or members_count != 2:
        fail("DescribeGroups: %s with %d members" % (state, members_count))
    offsets = committed(admin, GROUP)
    total = sum(meta.offset for tp, meta in offsets.items() if tp.topic == TOPIC)
    if total != 60:
        fail("committed offsets add up to %d, not 60: %s" % (total, offsets))
    for m in members:
        m.stop_flag.set()
        m.join(timeout=30)
    admin.close()
    print("OK run", flush=True)


def verify():
    admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    offsets = committed(admin, GROUP)
    total = sum(meta.offset for tp, meta in offsets.items() if tp.topic == TOPIC)
    if total != 60:
        fail("after restart the committed offsets add up to %d, not 60" % total)
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all")
    producer.send(TOPIC, key=b"new", value=b"after-restart")
    producer.flush(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        TOPIC,
        bootstrap_servers=BOOTSTRAP,
        group_id=GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=300,
    )
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and not got:
        for records in consumer.poll(timeout_ms=200).values():
            got.extend(r.value for r in records)
    consumer.close()
    if got != [b"after-restart"]:
        fail("expected only the new message, read %s" % got)
    admin.close()
    print("OK verify", flush=True)


if PHASE == "run":
    run()
elif PHASE == "verify":
    verify()
else:
    fail("unknown phase " + PHASE)
