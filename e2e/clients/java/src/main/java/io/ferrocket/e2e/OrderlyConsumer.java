package io.ferrocket.e2e;

import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeOrderlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerOrderly;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * DefaultMQPushConsumer with MessageListenerOrderly: prints every delivery; `--fail-index N`
 * answers SUSPEND_CURRENT_QUEUE_A_MOMENT the first time the message with user property `index`
 * N arrives. Exits once `--expect` distinct ids were consumed or `--timeout` seconds passed.
 */
public final class OrderlyConsumer {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        DefaultMQPushConsumer c = Args.pushConsumer(a, "e2e-orderly");
        c.setSuspendCurrentQueueTimeMillis(200);
        c.subscribe(a.get("topic", "e2e"), "*");
        String failIndex = a.get("fail-index", "");
        Set<String> failed = ConcurrentHashMap.newKeySet();
        Set<String> seen = ConcurrentHashMap.newKeySet();
        c.registerMessageListener((MessageListenerOrderly) (msgs, ctx) -> {
            for (MessageExt m : msgs) {
                String index = String.valueOf(m.getUserProperty("index"));
                Args.emit("id", m.getMsgId(), "queue", m.getQueueId(), "offset", m.getQueueOffset(), "index", index,
                    "body", new String(m.getBody(), StandardCharsets.UTF_8));
                if (index.equals(failIndex) && failed.add(index)) {
                    return ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT;
                }
            }
            for (MessageExt m : msgs) seen.add(m.getMsgId());
            return ConsumeOrderlyStatus.SUCCESS;
        });
        c.start();
        long deadline = System.currentTimeMillis() + a.getInt("timeout", 60) * 1000L;
        int expect = a.getInt("expect", 10);
        while (seen.size() < expect && System.currentTimeMillis() < deadline) Thread.sleep(50);
        c.shutdown();
        Args.emit("received", seen.size());
        System.exit(0); // the client may leave non-daemon threads behind
    }
}
