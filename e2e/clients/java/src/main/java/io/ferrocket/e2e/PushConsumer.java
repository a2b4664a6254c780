package io.ferrocket.e2e;

import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * DefaultMQPushConsumer (clustering, or `--broadcast`): subscribes `--group` to `--topic` with
 * `--expression` (tags, `*` by default), prints one JSON line per delivery and exits once
 * `--expect` distinct message ids arrived or `--timeout` seconds passed. `--fail N` answers
 * RECONSUME_LATER to the first N deliveries of every message (`--until-deliveries` then ends it
 * after that many deliveries); `--max-reconsume` sets maxReconsumeTimes, `--poll-namesrv-ms`
 * pollNameServerInterval. `--pop` (5.x only) sets clientRebalance=false: the broker assigns the
 * queues (QUERY_ASSIGNMENT) and the consumer pops and acks instead of pulling.
 */
public final class PushConsumer {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        DefaultMQPushConsumer c = Args.pushConsumer(a, "e2e-consumer");
        if (a.get("broadcast", null) != null) broadcasting(c);
        if (a.get("pop", null) != null) {
            c.getClass().getMethod("setClientRebalance", boolean.class).invoke(c, false); // absent in 4.x
        }
        c.setMaxReconsumeTimes(a.getInt("max-reconsume", 16));
        c.setPollNameServerInterval(a.getInt("poll-namesrv-ms", 30000));
        c.subscribe(a.get("topic", "e2e"), a.get("expression", "*"));
        int expect = a.getInt("expect", 10);
        int fail = a.getInt("fail", 0);
        int untilDeliveries = a.getInt("until-deliveries", Integer.MAX_VALUE);
        Set<String> seen = ConcurrentHashMap.newKeySet();
        AtomicInteger deliveries = new AtomicInteger();
        Object done = new Object();
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                deliveries.incrementAndGet();
                Args.emit("id", m.getMsgId(), "topic", m.getTopic(), "queue", m.getQueueId(), "offset", m.getQueueOffset(),
                    "reconsumeTimes", m.getReconsumeTimes(), "tags", String.valueOf(m.getTags()),
                    "body", new String(m.getBody(), StandardCharsets.UTF_8), "at", System.currentTimeMillis(),
                    "bornAt", m.getBornTimestamp(), "index", String.valueOf(m.getUserProperty("index")),
                    "keys", String.valueOf(m.getKeys()), "props", m.getProperties());
                if (m.getReconsumeTimes() < fail) return ConsumeConcurrentlyStatus.RECONSUME_LATER;
                seen.add(m.getMsgId());
            }
            synchronized (done) { done.notifyAll(); }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        long deadline = System.currentTimeMillis() + a.getInt("timeout", 60) * 1000L;
        synchronized (done) {
            while (seen.size() < expect && deliveries.get() < untilDeliveries && System.currentTimeMillis() < deadline) {
                done.wait(Math.max(1, Math.min(500, deadline - System.currentTimeMillis())));
            }
        }
        c.shutdown();
        Args.emit("received", seen.size(), "deliveries", deliveries.get());
        System.exit(0); // the client may leave non-daemon threads behind
    }

    /** MessageModel.BROADCASTING: the enum moved package between 4.x and 5.x, so by reflection. */
    @SuppressWarnings({"unchecked", "rawtypes"})
    private static void broadcasting(DefaultMQPushConsumer c) throws Exception {
        for (java.lang.reflect.Method m : c.getClass().getMethods()) {
            if (m.getName().equals("setMessageModel")) {
                m.invoke(c, Enum.valueOf((Class) m.getParameterTypes()[0], "BROADCASTING"));
            }
        }
    }
}
