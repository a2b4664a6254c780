package io.ferrocket.e2e;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;

/**
 * DefaultLitePullConsumer in `--mode subscribe` (group rebalance, committed offsets) or `--mode
 * assign` (every queue of the topic, from its start): polls until `--expect` distinct ids or
 * `--timeout` seconds, committing as it goes; prints every message.
 */
public final class LitePullConsumer {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        DefaultLitePullConsumer c = new DefaultLitePullConsumer(a.get("group", "e2e-lite"));
        c.setNamesrvAddr(a.get("namesrv", "127.0.0.1:9876"));
        c.setAutoCommit(true);
        String topic = a.get("topic", "e2e");
        boolean assign = a.get("mode", "subscribe").equals("assign");
        if (!assign) c.subscribe(topic, "*");
        c.start();
        if (assign) {
            Collection<MessageQueue> queues = c.fetchMessageQueues(topic);
            c.assign(new ArrayList<>(queues));
            for (MessageQueue q : queues) c.seekToBegin(q);
        }
        Set<String> seen = new HashSet<>();
        int expect = a.getInt("expect", 10);
        long deadline = System.currentTimeMillis() + a.getInt("timeout", 60) * 1000L;
        while (seen.size() < expect && System.currentTimeMillis() < deadline) {
            List<MessageExt> msgs = c.poll(1000);
            for (MessageExt m : msgs) {
                seen.add(m.getMsgId());
                Args.emit("id", m.getMsgId(), "queue", m.getQueueId(), "offset", m.getQueueOffset(),
                    "body", new String(m.getBody(), StandardCharsets.UTF_8));
            }
        }
        c.commitSync();
        c.shutdown();
        Args.emit("received", seen.size());
        System.exit(0); // the client may leave non-daemon threads behind
    }
}
