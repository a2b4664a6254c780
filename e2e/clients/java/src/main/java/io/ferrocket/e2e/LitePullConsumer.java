package io.ferrocket.e2e;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.rocketmq.client.consumer.DefaultLitePullConsumer;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.common.message.MessageQueue;

/**
 * DefaultLitePullConsumer in `--mode subscribe` (group rebalance, committed offsets) or `--mode
 * assign` (every queue of the topic, from its first offset). Polls until `--expect` distinct ids
 * or `--timeout` seconds, committing as it goes, and prints every message with `pass` 1. In assign
 * mode it then seeks every queue to its beginning and reads them all again as `pass` 2.
 *
 * <p>The seek comes after the first pass on purpose: the client's seek cancels a queue's pull task
 * while that task may still be holding a pull response, and if the new task has already taken the
 * seek offset, the old task's messages are delivered too (DefaultLitePullConsumerImpl.PullTaskImpl
 * checks `isCancelled()` before it takes the queue lock, not under it). Once a pass has drained
 * every queue, a task can only be holding an empty long poll.
 */
public final class LitePullConsumer {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        DefaultLitePullConsumer c = new DefaultLitePullConsumer(a.get("group", "e2e-lite"));
        c.setNamesrvAddr(a.get("namesrv", "127.0.0.1:9876"));
        c.setAutoCommit(true);
        String topic = a.get("topic", "e2e");
        boolean assign = a.get("mode", "subscribe").equals("assign");
        if (assign) {
            c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        } else {
            c.subscribe(topic, "*");
        }
        c.start();
        Collection<MessageQueue> queues = assign ? c.fetchMessageQueues(topic) : List.of();
        if (assign) c.assign(new ArrayList<>(queues));
        int expect = a.getInt("expect", 10);
        long deadline = System.currentTimeMillis() + a.getInt("timeout", 60) * 1000L;
        int received = poll(c, 1, expect, deadline);
        if (assign) {
            for (MessageQueue q : queues) c.seekToBegin(q);
            received = Math.min(received, poll(c, 2, expect, deadline));
        }
        c.commitSync();
        c.shutdown();
        Args.emit("received", received);
        System.exit(0); // the client may leave non-daemon threads behind
    }

    /** Polls until `expect` distinct ids or the deadline; returns how many distinct ids came. */
    private static int poll(DefaultLitePullConsumer c, int pass, int expect, long deadline) {
        Set<String> seen = new HashSet<>();
        while (seen.size() < expect && System.currentTimeMillis() < deadline) {
            List<MessageExt> msgs = c.poll(1000);
            for (MessageExt m : msgs) {
                seen.add(m.getMsgId());
                Args.emit("pass", pass, "id", m.getMsgId(), "queue", m.getQueueId(), "offset", m.getQueueOffset(),
                    "body", new String(m.getBody(), StandardCharsets.UTF_8));
            }
        }
        return seen.size();
    }
}
