// Consumer groups with kafkajs against a Chorus broker.
//
// usage: node groups.js BOOTSTRAP TOPIC GROUP PHASE
//   "run":    create the topic (6 partitions) through the admin API, produce 60 keyed
//             messages, run 3 consumers (kafkajs's round-robin assigner), check each gets 2
//             partitions and together they read everything with offsets committed, stop one
//             and check the other two take over 3 partitions each, then check the group and
//             its offsets through the admin API.
//   "verify": after a broker restart the committed offsets are still there and a consumer
//             of the group reads only a message produced after them.
// Exits non-zero with a message on the first failed check.

const { Kafka, logLevel } = require('kafkajs');

const [bootstrap, topic, groupId, phase] = process.argv.slice(2);
const kafka = new Kafka({ clientId: 'compat-js', brokers: [bootstrap], logLevel: logLevel.NOTHING });

function fail(message) {
  console.log('FAIL: ' + message);
  process.exit(1);
}

async function waitFor(what, check, timeoutMs = 30000, detail = () => '') {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  fail('timed out waiting for ' + what + ' ' + detail());
}

function consumer() {
  return kafka.consumer({
    groupId,
    sessionTimeout: 6000,
    heartbeatInterval: 300,
    maxWaitTimeInMs: 100,
  });
}

async function startMember(received) {
  const c = consumer();
  const member = { consumer: c, partitions: new Set() };
  c.on(c.events.GROUP_JOIN, (e) => {
    member.partitions = new Set(e.payload.memberAssignment[topic] || []);
  });
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({
    eachMessage: async ({ partition, message }) => {
      received.push([partition, message.offset, message.value.toString()]);
    },
  });
  return member;
}

function shares(members, sizes) {
  const owned = members.map((m) => m.partitions);
  const union = new Set(owned.flatMap((s) => [...s]));
  const got = owned.map((s) => s.size).sort();
  return JSON.stringify(got) === JSON.stringify(sizes) && union.size === 6;
}

async function totalCommitted(admin) {
  const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
  return offsets[0].partitions.reduce((sum, p) => sum + Math.max(0, Number(p.offset)), 0);
}

async function run() {
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 6, replicationFactor: 1 }] });
  const producer = kafka.producer();
  await producer.connect();
  const messages = [];
  for (let i = 0; i < 60; i++) messages.push({ key: 'k' + i, value: 'm' + i });
  await producer.send({ topic, acks: -1, messages });
  await producer.disconnect();

  const received = [];
  const members = [];
  for (let i = 0; i < 3; i++) members.push(await startMember(received));
  await waitFor('2 partitions each', () => shares(members, [2, 2, 2]));
  await waitFor('all 60 messages', () => received.length >= 60, 30000, () => 'received ' + JSON.stringify(received));
  const distinct = new Set(received.map((r) => r[2]));
  if (distinct.size !== 60) fail('expected 60 distinct messages, got ' + distinct.size);
  // kafkajs commits resolved offsets on its own schedule; wait until all 60 are committed.
  await waitFor('60 committed', async () => (await totalCommitted(admin)) === 60);

  const leaving = members.pop();
  await leaving.consumer.disconnect();
  const started = Date.now();
  await waitFor('3 partitions each after a member left', () => shares(members, [3, 3]));
  if (Date.now() - started > 6000) fail('the rebalance took longer than the session timeout');

  const listed = await admin.listGroups();
  if (!listed.groups.some((g) => g.groupId === groupId)) fail('listGroups lacks ' + groupId);
  const described = await admin.describeGroups([groupId]);
  const g = described.groups[0];
  if (g.state !== 'Stable' || g.members.length !== 2) {
    fail('describeGroups: ' + g.state + ' with ' + g.members.length + ' members');
  }
  for (const m of members) await m.consumer.disconnect();
  await admin.disconnect();
  console.log('OK run');
}

async function verify() {
  const admin = kafka.admin();
  await admin.connect();
  const total = await totalCommitted(admin);
  if (total !== 60) fail('after restart the committed offsets add up to ' + total);
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, acks: -1, messages: [{ key: 'new', value: 'after-restart' }] });
  await producer.disconnect();
  const got = [];
  const c = consumer();
  await c.connect();
  await c.subscribe({ topic, fromBeginning: true });
  await c.run({ eachMessage: async ({ message }) => { got.push(message.value.toString()); } });
  await waitFor('the new message', () => got.length >= 1);
  await new Promise((r) => setTimeout(r, 500));
  await c.disconnect();
  if (JSON.stringify(got) !== JSON.stringify(['after-restart'])) fail('read ' + JSON.stringify(got));
  await admin.disconnect();
  console.log('OK verify');
}

(phase === 'run' ? run() : phase === 'verify' ? verify() : Promise.reject(new Error('unknown phase ' + phase)))
  .then(() => process.exit(0))
  .catch((e) => fail(e && e.stack ? e.stack : String(e)));
