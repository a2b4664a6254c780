package io.ferrocket.e2e;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.message.Message;

/**
 * DefaultMQProducer: sends `--count` messages to `--topic` `--mode sync|async|oneway|batch`, with
 * an optional `--tag`, `--keys` prefix and `--delay-level`; prints one JSON line per message
 * (`id` is the unique id consumers see, `offsetMsgId` the broker's) and `{"sent": n}` last; with
 * `--access-key` and `--secret-key` its requests are signed (AclClientRPCHook).
 */
public final class Producer {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        DefaultMQProducer p = new DefaultMQProducer(a.get("group", "e2e-producer"), a.rpcHook());
        p.setNamesrvAddr(a.get("namesrv", "127.0.0.1:9876"));
        p.setSendMsgTimeout(a.getInt("send-timeout-ms", 5000));
        p.start();
        String topic = a.get("topic", "e2e");
        String mode = a.get("mode", "sync");
        int count = a.getInt("count", 10);
        int delay = a.getInt("delay-level", 0);
        List<Message> msgs = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            Message m = new Message(topic, a.get("tag", ""), (a.get("body", "m") + "-" + i).getBytes(StandardCharsets.UTF_8));
            if (a.get("keys", null) != null) m.setKeys(a.get("keys", "") + i);
            if (delay > 0) m.setDelayTimeLevel(delay);
            m.putUserProperty("index", Integer.toString(i));
            msgs.add(m);
        }
        int sent = 0;
        switch (mode) {
            case "sync":
                for (Message m : msgs) {
                    long at = System.currentTimeMillis(); // before the send: the broker stamps the message after it
                    report(p.send(m), at);
                    sent++;
                }
                break;
            case "async": {
                CountDownLatch done = new CountDownLatch(count);
                int[] ok = {0};
                for (Message m : msgs) {
                    long at = System.currentTimeMillis();
                    p.send(m, new SendCallback() {
                        public void onSuccess(SendResult r) {
                            synchronized (ok) { ok[0]++; }
                            report(r, at);
                            done.countDown();
                        }
                        public void onException(Throwable e) {
                            Args.emit("error", e.toString());
                            done.countDown();
                        }
                    });
                }
                done.await(60, TimeUnit.SECONDS);
                sent = ok[0];
                break;
            }
            case "oneway":
                for (Message m : msgs) {
                    p.sendOneway(m);
                    Args.emit("id", m.getProperty("UNIQ_KEY"));
                    sent++;
                }
                break;
            case "batch":
                for (int i = 0; i < msgs.size(); i += 100) {
                    SendResult r = p.send(msgs.subList(i, Math.min(msgs.size(), i + 100)));
                    for (String id : r.getMsgId().split(",")) {
                        Args.emit("id", id, "status", r.getSendStatus().name(), "queue", r.getMessageQueue().getQueueId());
                        sent++;
                    }
                }
                break;
            default:
                throw new IllegalArgumentException("--mode sync|async|oneway|batch");
        }
        Args.emit("sent", sent);
        p.shutdown();
        System.exit(0); // the client may leave non-daemon threads behind
    }

    private static void report(SendResult r, long at) {
        Args.emit("id", r.getMsgId(), "offsetMsgId", r.getOffsetMsgId(), "status", r.getSendStatus().name(),
            "queue", r.getMessageQueue().getQueueId(), "queueOffset", r.getQueueOffset(), "sentAt", at);
    }
}
