// Drives the official RocketMQ 5.x Node.js client (rocketmq-client-nodejs 1.0.8) for the e2e suite.
// Same command-line contract as ../python/client.py: `send` prints one JSON line per acknowledged
// message, `receive` one per received message until --count messages or --timeout seconds.
'use strict';
const { Producer, SimpleConsumer, PushConsumer, ConsumeResult } = require('rocketmq-client-nodejs');

function args() {
  const [cmd, ...rest] = process.argv.slice(2);
  const a = {
    cmd, tag: 'TagA', keyPrefix: 'key', bodyPrefix: 'body', filter: '*', invisible: 20, poll: 5, timeout: 30, ack: true,
    action: 'commit', checker: 'commit', hold: 0, untilChecks: 0, linger: 0,
  };
  for (let i = 0; i < rest.length; i++) {
    const k = rest[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (k === 'noAck') { a.ack = false; continue; }
    a[k] = rest[++i];
  }
  for (const n of [ 'count', 'invisible', 'poll', 'timeout', 'hold', 'untilChecks', 'linger' ]) a[n] = Number(a[n]);
  return a;
}

// --access-key / --secret-key: the client's sessionCredentials (it signs every call).
function credentials(a) {
  return a.accessKey ? { sessionCredentials: { accessKey: a.accessKey, accessSecret: a.secretKey } } : {};
}

async function send(a) {
  const producer = new Producer({ ...credentials(a), endpoints: a.endpoint, namespace: '', topics: [ a.topic ], requestTimeout: 10000 });
  await producer.startup();
  try {
    for (let i = 0; i < a.count; i++) {
      const body = `${a.bodyPrefix}-${i}`;
      const keys = [ `${a.keyPrefix}-${i}` ];
      const r = await producer.send({ topic: a.topic, tag: a.tag, keys, body: Buffer.from(body), properties: new Map([[ 'origin', 'node' ]]) });
      console.log(JSON.stringify({ id: r.messageId, tag: a.tag, keys, body }));
    }
  } finally {
    await shutdown(producer);
  }
}

async function receive(a) {
  const consumer = new SimpleConsumer({
    ...credentials(a), endpoints: a.endpoint, namespace: '', consumerGroup: a.group, requestTimeout: 10000,
    subscriptions: new Map([[ a.topic, a.filter ]]), awaitDuration: a.poll * 1000,
  });
  await consumer.startup();
  let got = 0;
  const deadline = Date.now() + a.timeout * 1000;
  try {
    while (got < a.count && Date.now() < deadline) {
      const messages = await consumer.receive(Math.min(32, a.count - got), a.invisible * 1000);
      for (const m of messages) {
        console.log(JSON.stringify({ id: m.messageId, tag: m.tag, keys: m.keys, body: m.body.toString(), attempt: m.deliveryAttempt }));
        if (a.ack) await consumer.ack(m);
        got++;
      }
    }
  } finally {
    await shutdown(consumer);
  }
}

// A PushConsumer: prints every message it consumes; done after --count distinct messages, then
// keeps consuming --linger seconds (to show that nothing acked arrives again).
async function push(a) {
  const seen = new Set();
  let finish;
  const done = new Promise(resolve => { finish = resolve; });
  const consumer = new PushConsumer({
    ...credentials(a), endpoints: a.endpoint, namespace: '', consumerGroup: a.group, requestTimeout: 10000,
    subscriptions: new Map([[ a.topic, a.filter ]]),
    messageListener: {
      consume(m) {
        console.log(JSON.stringify({ id: m.messageId, tag: m.tag, keys: m.keys, body: m.body.toString(), attempt: m.deliveryAttempt,
          t: Date.now() / 1000 }));
        seen.add(m.messageId);
        if (seen.size >= a.count) finish();
        return ConsumeResult.SUCCESS;
      },
    },
  });
  await consumer.startup();
  let timer;
  try {
    await Promise.race([ done, new Promise(resolve => { timer = setTimeout(resolve, a.timeout * 1000); }) ]);
    clearTimeout(timer);
    if (a.linger) await new Promise(resolve => setTimeout(resolve, a.linger * 1000));
  } finally {
    await shutdown(consumer);
  }
}

// Transactional messages: send --count, then commit / rollback / leave open (--action); the checker
// answers check-backs with --checker (COMMIT 1, ROLLBACK 2, unknown 0) and prints {"check": id}.
// Stays up --hold seconds, or until --until-checks check-backs arrived.
async function txsend(a) {
  const answer = { commit: 1, rollback: 2, unknown: 0 }[a.checker];
  let checks = 0;
  let enough;
  const done = new Promise(resolve => { enough = resolve; });
  const checker = {
    async check(messageView) {
      console.log(JSON.stringify({ check: messageView.messageId, answer: a.checker }));
      if (a.untilChecks && ++checks >= a.untilChecks) enough();
      return answer;
    },
  };
  const producer = new Producer({ ...credentials(a), endpoints: a.endpoint, namespace: '', topics: [ a.topic ], requestTimeout: 10000, checker });
  await producer.startup();
  try {
    for (let i = 0; i < a.count; i++) {
      const body = `${a.bodyPrefix}-${i}`;
      const tx = producer.beginTransaction();
      const r = await producer.send({ topic: a.topic, tag: a.tag, body: Buffer.from(body) }, tx);
      console.log(JSON.stringify({ id: r.messageId, body }));
      if (a.action === 'commit') await tx.commit();
      else if (a.action === 'rollback') await tx.rollback();
    }
    let timer;
    await Promise.race([ done, new Promise(resolve => { timer = setTimeout(resolve, a.hold * 1000); }) ]);
    clearTimeout(timer);
  } finally {
    await shutdown(producer);
  }
}

// rocketmq-client-nodejs 1.0.8 closes its log file inside BaseClient.shutdown() and then logs once
// more ("log stream had been closed"); that client bug is not a shutdown failure.
async function shutdown(client) {
  try {
    await client.shutdown();
  } catch (e) {
    if (!/log stream had been closed/.test(String(e && e.message))) throw e;
  }
}

const a = args();
({ send, receive, push, txsend }[a.cmd])(a).then(() => process.exit(0), e => {
  console.error(e && e.stack || e);
  process.exit(1);
});
