//! `ferrocket bench --protocol remoting`: senders speaking RocketMQ Remoting as the Java
//! `DefaultMQProducer` does (apache/rocketmq `MQClientAPIImpl.sendMessage`): SEND_MESSAGE_V2 with
//! the one-letter header of `SendMessageRequestHeaderV2` in JSON, the properties the producer sets
//! (`TAGS`, `UNIQ_KEY`, `WAIT`), queues picked round-robin, several senders sharing a connection,
//! responses matched by `opaque`. A window of `--batch` > 1 messages is one SEND_BATCH_MESSAGE
//! (`MessageBatch`, `MessageDecoder.encodeMessages`), as `producer.send(Collection)`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::{BenchOpts, BenchReport, Mode, Side};
use crate::remoting::codes::{SEND_BATCH_MESSAGE, SEND_MESSAGE_V2, SUCCESS};
use crate::remoting::command::{Command, SerializeType};
use crate::remoting::conn::{read_frame, split};
use crate::store::record::encode_properties;

/// Queues a sender spreads its messages over: a Java producer's `defaultTopicQueueNums`, the
/// queues of a topic it creates by sending to it.
const QUEUES: u64 = 4;
/// Producer group of the senders.
const PRODUCER_GROUP: &str = "bench-producer";

/// Requests in flight on one connection, by `opaque`, and the way to their answers.
type Pending = Arc<Mutex<HashMap<i32, oneshot::Sender<Command>>>>;

/// One client connection, split as the server splits its own ([`split`]), and a reader task that
/// hands each response to the request it answers.
struct Connection {
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    next_opaque: AtomicI32,
}

impl Connection {
    /// Connects to `addr`. Errors: the connection is refused.
    async fn open(addr: &str) -> anyhow::Result<Arc<Connection>> {
        let (mut rd, out) = split(TcpStream::connect(addr).await?);
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(frame)) = read_frame(&mut rd).await {
                let Ok(resp) = Command::decode(&frame) else { break };
                if let Some(tx) = waiting.lock().remove(&resp.opaque) {
                    let _ = tx.send(resp);
                }
            }
            waiting.lock().clear(); // the callers' receivers see the connection end
        });
        Ok(Arc::new(Connection { out, pending, next_opaque: AtomicI32::new(1) }))
    }

    /// Sends `cmd` (its `opaque` set here) and waits for the response. Errors: the connection
    /// ended first.
    async fn call(&self, mut cmd: Command) -> anyhow::Result<Command> {
        cmd.opaque = self.next_opaque.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().insert(cmd.opaque, tx);
        self.out.send(cmd.encode()).await.map_err(|_| anyhow::anyhow!("connection closed"))?;
        Ok(rx.await?)
    }
}

/// The request a producer makes to `queue_id` of `topic` for one message per unique id in `ids`,
/// each with `body`: SEND_MESSAGE_V2 for one, SEND_BATCH_MESSAGE (header field `m` = batch) for
/// several.
fn send_request(topic: &str, queue_id: u64, ids: &[String], body: &[u8]) -> Command {
    let props = |id: &str| {
        let p: BTreeMap<String, String> =
            [("TAGS", "bench"), ("UNIQ_KEY", id), ("WAIT", "true")].map(|(k, v)| (k.into(), v.into())).into();
        encode_properties(&p).expect("no separators in these properties")
    };
    let batch = ids.len() > 1;
    let code = if batch { SEND_BATCH_MESSAGE } else { SEND_MESSAGE_V2 };
    let mut cmd = Command::request(code, 0, false, SerializeType::Json);
    cmd.put("a", PRODUCER_GROUP)
        .put("b", topic)
        .put("c", "TBW102")
        .put("d", QUEUES)
        .put("e", queue_id)
        .put("f", 0)
        .put("g", crate::store::now_ms())
        .put("h", 0)
        .put("j", 0)
        .put("k", false)
        .put("m", batch);
    if batch {
        cmd.put("i", "WAIT\u{1}true\u{2}");
        for id in ids {
            let p = props(id);
            let total = 20 + body.len() + 2 + p.len();
            cmd.body.extend_from_slice(&(total as i32).to_be_bytes());
            cmd.body.extend_from_slice(&[0; 8]); // magic and body CRC: the broker checks neither
            cmd.body.extend_from_slice(&0i32.to_be_bytes()); // flag
            cmd.body.extend_from_slice(&(body.len() as i32).to_be_bytes());
            cmd.body.extend_from_slice(body);
            cmd.body.extend_from_slice(&(p.len() as i16).to_be_bytes());
            cmd.body.extend_from_slice(p.as_bytes());
        }
    } else {
        cmd.put("i", props(&ids[0]));
        cmd.body = body.to_vec();
    }
    cmd
}

/// Runs `--mode produce` over Remoting against the broker at `--server` (its Remoting port).
/// Errors: another mode, or the broker cannot be reached.
pub async fn run(o: BenchOpts) -> anyhow::Result<BenchReport> {
    anyhow::ensure!(o.topics <= 1, "--topics is for gRPC runs");
    anyhow::ensure!(o.mode == Mode::Produce, "--protocol remoting runs --mode produce only");
    anyhow::ensure!(o.rate == 0 && o.delay_after.is_none(), "--protocol remoting takes no --rate or --delay-after");
    let mut conns = Vec::new();
    for _ in 0..o.concurrency.div_ceil(8).max(1) {
        conns.push(Connection::open(&o.server).await?);
    }
    let (stop, side) = (Arc::new(AtomicBool::new(false)), Side::new());
    let body = Arc::new(vec![b'x'; o.size]);
    let batch = o.batch.max(1);
    let claimed = Arc::new(AtomicU64::new(0)); // messages senders have started on (for --messages)
    let mut senders = Vec::new();
    for t in 0..o.concurrency {
        let (conn, stop, side, body, topic) =
            (conns[t % conns.len()].clone(), stop.clone(), side.clone(), body.clone(), o.topic.clone());
        let (limit, claimed) = (o.messages, claimed.clone());
        senders.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let first = claimed.fetch_add(batch as u64, Ordering::Relaxed);
                if limit > 0 && first >= limit {
                    break;
                }
                let ids: Vec<String> = (0..batch).map(|k| format!("B{t:04}{:012}", i + k as u64)).collect();
                let req = send_request(&topic, (t as u64 + i) % QUEUES, &ids, &body);
                i += batch as u64;
                let start = Instant::now();
                match conn.call(req).await {
                    Ok(r) if r.code == SUCCESS => side.record(start, batch as u64),
                    Ok(r) => side.failed(format_args!("response code {}: {}", r.code, r.remark.unwrap_or_default())),
                    Err(e) => side.failed(e),
                }
            }
        }));
    }
    let secs = super::run_until_done(&o, senders, Vec::new(), &side, &stop).await;
    Ok(BenchReport {
        topics: None,
        size: o.size,
        concurrency: o.concurrency,
        batch: o.batch,
        seconds: secs,
        produce: Some(side.report(secs, o.size)),
        consume: None,
    })
}
