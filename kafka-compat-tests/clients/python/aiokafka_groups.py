"""Consumer groups with aiokafka against Chorus.

usage: aiokafka_groups.py BOOTSTRAP TOPIC GROUP STRATEGY PHASE
  STRATEGY: range or roundrobin.
  PHASE "run":    create the topic (6 partitions), produce 60 keyed messages, run 3
                  consumers: each gets 2 partitions and together they read everything once;
                  stop one, the other two take 3 each; list and describe the group and its
                  committed offsets through the admin API.
  PHASE "verify": after a broker restart the committed offsets are still there and a
                  restarted consumer of the group reads only what is new.
"""

import asyncio
import sys
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

from common import fail

BOOTSTRAP, TOPIC, GROUP, STRATEGY, PHASE = sys.argv[1:6]
ASSIGNORS = {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}


def new_consumer():
    return AIOKafkaConsumer(
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


class Member:
    def __init__(self):
        self.consumer = new_consumer()
        self.received = []
        self.stopping = False
        self.task = None

    async def start(self):
        await self.consumer.start()
        self.task = asyncio.create_task(self.loop())

    async def loop(self):
        while not self.stopping:
            batches = await self.consumer.getmany(timeout_ms=100)
            for records in batches.values():
                self.received.extend(r.value for r in records)
            if batches:
                await self.consumer.commit()

    async def stop(self):
        self.stopping = True
        await self.task
        await self.consumer.stop()

    def partitions(self):
        return {tp.partition for tp in self.consumer.assignment()}


async def wait_for(what, check, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        await asyncio.sleep(0.1)
    fail("timed out waiting for " + what)


async def committed_total(admin):
    offsets = await admin.list_consumer_group_offsets(GROUP)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == TOPIC)


async def run():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    await admin.create_topics([NewTopic(TOPIC, num_partitions=6, replication_factor=1)])
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    for i in range(60):
        await producer.send(TOPIC, key=b"k%d" % i, value=b"m%d" % i)
    await producer.flush()
    await producer.stop()

    members = [Member() for _ in range(3)]
    for m in members:
        await m.start()

    def shares(sizes):
        owned = [m.partitions() for m in members]
        union = set().union(*owned)
        return sorted(len(o) for o in owned) == sizes and len(union) == 6 and sum(map(len, owned)) == 6

    await wait_for("2 partitions each", lambda: shares([2, 2, 2]))
    await wait_for("all 60 messages", lambda: sum(len(m.received) for m in members) >= 60)
    values = [v for m in members for v in m.received]
    if len(values) != 60 or len(set(values)) != 60:
        fail("expected 60 distinct messages once each, got %d" % len(values))

    leaving = members.pop()
    await leaving.stop()
    started = time.time()
    await wait_for("3 partitions each after a member left", lambda: shares([3, 3]))
    if time.time() - started > 6:
        fail("the rebalance took longer than the session timeout")

    listed = [g[0] if isinstance(g, tuple) else g.group_id for g in await admin.list_consumer_groups()]
    if GROUP not in listed:
        fail("ListGroups lacks %s: %s" % (GROUP, listed))
    described = await admin.describe_consumer_groups([GROUP])
    # Raw DescribeGroups groups: (error_code, group, state, protocol_type, protocol, members, ...)
    _, _, state, _, _, group_members = described[0].groups[0][:6]
    if state != "Stable" or len(group_members) != 2:
        fail("DescribeGroups: %s with %d members" % (state, len(group_members)))
    total = await committed_total(admin)
    if total != 60:
        fail("committed offsets add up to %d, not 60" % total)
    for m in members:
        await m.stop()
    await admin.close()
    print("OK run", flush=True)


async def verify():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    total = await committed_total(admin)
    await admin.close()
    if total != 60:
        fail("after restart the committed offsets add up to %d, not 60" % total)
    producer = AIOKafkaProducer(bootstrap_servers=BOOTSTRAP)
    await producer.start()
    await producer.send_and_wait(TOPIC, key=b"new", value=b"after-restart")
    await producer.stop()
    consumer = new_consumer()
    await consumer.start()
    got = []
    deadline = time.time() + 30
    while time.time() < deadline and not got:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            got.extend(r.value for r in records)
    await consumer.stop()
    if got != [b"after-restart"]:
        fail("expected only the new message, read %s" % got)
    print("OK verify", flush=True)


asyncio.run(run() if PHASE == "run" else verify())
