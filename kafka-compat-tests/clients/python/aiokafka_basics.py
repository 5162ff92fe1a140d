"""aiokafka basics against Chorus.

usage: aiokafka_basics.py BOOTSTRAP TOPIC
Metadata, topic creation through the admin API, an idempotent producer per compression
codec sending keys, headers and null values, read back in order by a consumer.
"""

import asyncio
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from common import expect_equal, fail, records_for

BOOTSTRAP, TOPIC = sys.argv[1:3]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


async def main():
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    cluster = await admin.describe_cluster()
    if not cluster["brokers"]:
        fail("DescribeCluster lists no brokers")
    await admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
    described = await admin.describe_topics([TOPIC])
    expect_equal("partitions after create",
                 sorted(p["partition"] for p in described[0]["partitions"]), [0, 1, 2])
    await admin.close()

    want = []
    for codec in CODECS:
        producer = AIOKafkaProducer(
            bootstrap_servers=BOOTSTRAP,
            compression_type=None if codec == "none" else codec,
            enable_idempotence=True,
            linger_ms=5,
        )
        await producer.start()
        try:
            for key, value, headers in records_for(codec):
                await producer.send_and_wait(TOPIC, key=key, value=value, headers=headers, partition=0)
                want.append((key, value, headers))
        finally:
            await producer.stop()

    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        tp = TopicPartition(TOPIC, 0)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        got = []
        while len(got) < len(want):
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 15)
            for m in batch.get(tp, []):
                got.append((m.key, m.value, list(m.headers or [])))
    finally:
        await consumer.stop()
    expect_equal("records read back", got, want)
    print("ok: %d records over %d codecs" % (len(got), len(CODECS)))


asyncio.run(main())
