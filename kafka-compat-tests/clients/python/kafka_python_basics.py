"""kafka-python basics against Chorus.

usage: kafka_python_basics.py BOOTSTRAP TOPIC
Metadata, topic creation through the admin API, an idempotent producer per compression
codec sending keys, headers and null values, read back in order by a consumer.
"""

import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from common import expect_equal, fail, records_for

BOOTSTRAP, TOPIC = sys.argv[1:3]
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

admin = KafkaAdminClient(bootstrap_servers=BOOTSTRAP)
if not admin.describe_cluster()["brokers"]:
    fail("DescribeCluster lists no brokers")
admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=1)])
described = admin.describe_topics([TOPIC])[0]
expect_equal("partitions after create", sorted(p["partition_index"] for p in described["partitions"]), [0, 1, 2])
admin.close()

want = []
for codec in CODECS:
    producer = KafkaProducer(
        bootstrap_servers=BOOTSTRAP,
        compression_type=None if codec == "none" else codec,
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
    )
    futures = []
    for key, value, headers in records_for(codec):
        futures.append(producer.send(TOPIC, key=key, value=value, headers=headers, partition=0))
        want.append((key, value, headers))
    for f in futures:
        f.get(timeout=30)
    producer.close()

consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, consumer_timeout_ms=10000)
tp = TopicPartition(TOPIC, 0)
consumer.assign([tp])
consumer.seek_to_beginning(tp)
got = []
for m in consumer:
    got.append((m.key, m.value, list(m.headers or [])))
    if len(got) == len(want):
        break
consumer.close()
if len(got) < len(want):
    fail("read %d of %d records" % (len(got), len(want)))
expect_equal("records read back", got, want)
print("ok: %d records over %d codecs" % (len(got), len(CODECS)))
