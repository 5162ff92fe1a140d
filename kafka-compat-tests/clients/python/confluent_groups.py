"""Consumer groups with confluent-kafka (librdkafka) against Chorus.

usage: confluent_groups.py BOOTSTRAP TOPIC GROUP STRATEGY PHASE
  STRATEGY: range, roundrobin or cooperative-sticky (librdkafka's assignors).
  PHASE "run":    create the topic (6 partitions), produce 60 keyed messages, run 3
                  consumers: each gets 2 partitions and together they read everything once;
                  stop one, the other two take 3 each; list and describe the group and its
                  committed offsets through the admin API.
  PHASE "verify": after a broker restart the committed offsets are still there and a
                  restarted consumer of the group reads only what is new.
"""

import sys
import threading
import time

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import fail, wait_for

BOOTSTRAP, TOPIC, GROUP, STRATEGY, PHASE = sys.argv[1:6]


def consumer_config():
    return {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": GROUP,
        "partition.assignment.strategy": STRATEGY,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
        "fetch.wait.max.ms": 100,
    }


class Member(threading.Thread):
    """One consumer polling on its own thread; records what it reads and owns."""

    def __init__(self):
        super().__init__(daemon=True)
        self.consumer = Consumer(consumer_config())
        self.consumer.subscribe([TOPIC])
        self.received = []
        self.owned = set()
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()

    def run(self):
        while not self.stop_flag.is_set():
            m = self.consumer.poll(0.1)
            with self.lock:
                self.owned = {tp.partition for tp in self.consumer.assignment()}
                if m is not None and not m.error():
                    self.received.append((m.partition(), m.offset(), m.value()))
            if m is not None and not m.error():
                self.consumer.commit(message=m, asynchronous=False)
        self.consumer.close()

    def partitions(self):
        with self.lock:
            return set(self.owned)


def committed_total(admin):
    request = [ConsumerGroupTopicPartitions(GROUP)]
    result = admin.list_consumer_group_offsets(request)[GROUP].result(15)
    return sum(tp.offset for tp in result.topic_partitions if tp.topic == TOPIC and tp.offset >= 0)


def run():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=1)])[TOPIC].result(15)
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    for i in range(60):
        producer.produce(TOPIC, key=b"k%d" % i, value=b"m%d" % i)
    if producer.flush(30) != 0:
        fail("produce did not finish")

    members = [Member() for _ in range(3)]
    for m in members:
        m.start()

    def shares(sizes):
        owned = [m.partitions() for m in members]
        union = set().union(*owned)
        return sorted(len(o) for o in owned) == sizes and len(union) == 6 and sum(map(len, owned)) == 6

    wait_for("2 partitions each", lambda: shares([2, 2, 2]))
    wait_for("all 60 messages", lambda: sum(len(m.received) for m in members) >= 60)
    values = [v for m in members for (_, _, v) in m.received]
    if len(values) != 60 or len(set(values)) != 60:
        fail("expected 60 distinct messages once each, got %d (%d distinct)" % (len(values), len(set(values))))

    leaving = members.pop()
    leaving.stop_flag.set()
    leaving.join(timeout=30)
    started = time.time()
    wait_for("3 partitions each after a member left", lambda: shares([3, 3]))
    if time.time() - started > 6:
        fail("the rebalance took longer than the session timeout")

    listed = admin.list_consumer_groups().result(15)
    if GROUP not in [g.group_id for g in listed.valid]:
        fail("ListGroups lacks %s" % GROUP)
    described = admin.describe_consumer_groups([GROUP])[GROUP].result(15)
    if len(described.members) != 2 or str(described.state).split(".")[-1] != "STABLE":
        fail("DescribeGroups: %s with %d members" % (described.state, len(described.members)))
    wait_for("committed offsets adding up to 60", lambda: committed_total(admin) == 60)
    for m in members:
        m.stop_flag.set()
        m.join(timeout=30)
    print("OK run", flush=True)


def verify():
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    total = committed_total(admin)
    if total != 60:
        fail("after restart the committed offsets add up to %d, not 60" % total)
    producer = Producer({"bootstrap.servers": BOOTSTRAP})
    producer.produce(TOPIC, key=b"new", value=b"after-restart")
    producer.flush(30)
    consumer = Consumer(consumer_config())
    consumer.subscribe([TOPIC])
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and not got:
        m = consumer.poll(0.2)
        if m is not None and not m.error():
            got.append(m.value())
    consumer.close()
    if got != [b"after-restart"]:
        fail("expected only the new message, read %s" % got)
    print("OK verify", flush=True)


if PHASE == "run":
    run()
elif PHASE == "verify":
    verify()
else:
    fail("unknown phase " + PHASE)
