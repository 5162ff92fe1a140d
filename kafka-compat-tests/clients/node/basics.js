// kafkajs basics against Chorus.
//
// usage: node basics.js BOOTSTRAP TOPIC
// Metadata, topic creation through the admin API, an idempotent producer per codec kafkajs
// ships with (none, gzip; the others need plugins), sending keys, headers and null values,
// read back in order by a consumer.

const { Kafka, CompressionTypes, logLevel } = require('kafkajs')

const [bootstrap, topic] = process.argv.slice(2)
const kafka = new Kafka({ brokers: [bootstrap], clientId: 'compat-basics', logLevel: logLevel.NOTHING })

function fail (message) {
  console.log('FAIL:', message)
  process.exit(1)
}

function recordsFor (codec) {
  return [
    { key: `key-${codec}`, value: `value-${codec}`.repeat(20), headers: { source: 'compat' } },
    { key: `null-${codec}`, value: null },
    { key: null, value: `no-key-${codec}` }
  ]
}

async function main () {
  const admin = kafka.admin()
  await admin.connect()
  const cluster = await admin.describeCluster()
  if (cluster.brokers.length === 0) fail('no brokers in DescribeCluster')
  await admin.createTopics({ topics: [{ topic, numPartitions: 3 }], waitForLeaders: true })
  const meta = await admin.fetchTopicMetadata({ topics: [topic] })
  if (meta.topics[0].partitions.length !== 3) fail(`expected 3 partitions: ${JSON.stringify(meta)}`)
  await admin.disconnect()

  const want = []
  for (const [name, codec] of [['none', CompressionTypes.None], ['gzip', CompressionTypes.GZIP]]) {
    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
    await producer.connect()
    const messages = recordsFor(name).map(m => ({ ...m, partition: 0 }))
    await producer.send({ topic, compression: codec, acks: -1, messages })
    want.push(...messages)
    await producer.disconnect()
  }

  const got = []
  const consumer = kafka.consumer({ groupId: 'kafkajs-basics', maxWaitTimeInMs: 100 })
  await consumer.connect()
  await consumer.subscribe({ topic, fromBeginning: true })
  const done = new Promise((resolve) => {
    consumer.run({
      eachMessage: async ({ partition, message }) => {
        if (partition !== 0) return
        got.push(message)
        if (got.length === want.length) resolve()
      }
    })
  })
  const timer = setTimeout(() => fail(`read ${got.length} of ${want.length} records`), 30000)
  await done
  clearTimeout(timer)
  await consumer.disconnect()

  want.forEach((w, i) => {
    const g = got[i]
    const key = g.key === null ? null : g.key.toString()
    const value = g.value === null ? null : g.value.toString()
    if (key !== w.key || value !== w.value) {
      fail(`record ${i}: got ${key}=${value}, want ${w.key}=${w.value}`)
    }
    const source = g.headers.source ? g.headers.source.toString() : undefined
    const wantSource = w.headers ? w.headers.source : undefined
    if (source !== wantSource) fail(`record ${i}: header source ${source}, want ${wantSource}`)
  })
  console.log(`ok: ${got.length} records`)
}

main().catch(e => fail(e.stack || String(e)))
