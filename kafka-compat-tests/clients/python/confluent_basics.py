"""confluent-kafka (librdkafka) basics against Chorus.

usage: confluent_basics.py BOOTSTRAP TOPIC
Metadata, topic creation through the admin API, an idempotent producer per compression
codec sending keys, headers and null values, read back in order by a consumer.
"""

import sys

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import expect_equal, fail, records_for

BOOTSTRAP, TOPIC = sys.argv[1:3]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
metadata = admin.list_topics(timeout=10)
if not metadata.brokers:
    fail("metadata lists no brokers")
admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])[TOPIC].result(15)
partitions = admin.list_topics(TOPIC, timeout=10).topics[TOPIC].partitions
expect_equal("partitions after create", sorted(partitions), [0, 1, 2])

want = []
for codec in CODECS:
    errors = []
    producer = Producer({
        "bootstrap.servers": BOOTSTRAP,
        "compression.type": codec,
        "enable.idempotence": True,
        "linger.ms": 5,
    })
    for key, value, headers in records_for(codec):
        producer.produce(TOPIC, key=key, value=value, headers=headers, partition=0,
                         on_delivery=lambda err, msg: err and errors.append(err))
        want.append((key, value, headers))
    if producer.flush(30) != 0 or errors:
        fail("%s produce failed: %s" % (codec, errors))

consumer = Consumer({
    "bootstrap.servers": BOOTSTRAP,
    "group.id": "confluent-basics",
    "enable.auto.commit": False,
})
consumer.assign([TopicPartition(TOPIC, 0, 0)])
got = []
while len(got) < len(want):
    m = consumer.poll(10)
    if m is None:
        fail("no record within 10 s after %d of %d" % (len(got), len(want)))
    if m.error():
        fail("consume error: %s" % m.error())
    got.append((m.key(), m.value(), m.headers() or []))
consumer.close()
expect_equal("records read back", got, want)
print("ok: %d records over %d codecs" % (len(got), len(CODECS)))
