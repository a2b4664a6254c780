package io.ferrocket.e2e.grpc;

import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.rocketmq.client.apis.message.MessageBuilder;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;

/**
 * `send`: --count messages to --topic; one JSON line per acknowledged send. NORMAL, or FIFO with
 * --message-groups N (message group `group-<i mod N>`), or DELAY with --delay s (due that many
 * whole seconds from now, as ../python/client.py).
 */
final class Send {
    static void run(Cli a) throws Exception {
        String topic = a.get("topic", "");
        String tag = a.get("tag", "TagA");
        int groups = a.getInt("message-groups", 0);
        double delay = a.getDouble("delay", 0);
        try (Producer p = Cli.PROVIDER.newProducerBuilder().setClientConfiguration(a.config()).setTopics(topic).build()) {
            for (int i = 0; i < a.getInt("count", 0); i++) {
                String body = a.get("body-prefix", "body") + "-" + i;
                String key = a.get("key-prefix", "key") + "-" + i;
                MessageBuilder b = Cli.PROVIDER.newMessageBuilder().setTopic(topic).setTag(tag).setKeys(key)
                    .setBody(body.getBytes(StandardCharsets.UTF_8))
                    .addProperty("origin", "java").addProperty("i", Integer.toString(i))
                    .addProperty("color", List.of("red", "green", "blue").get(i % 3));
                Map<String, Object> out = new LinkedHashMap<>();
                if (groups > 0) {
                    b.setMessageGroup("group-" + i % groups);
                    out.put("group", "group-" + i % groups);
                }
                if (delay > 0) {
                    long due = (long) (System.currentTimeMillis() / 1000.0 + delay) * 1000;
                    b.setDeliveryTimestamp(due);
                    out.put("due", due / 1000);
                }
                SendReceipt r = p.send(b.build());
                out.putAll(Map.of("id", r.getMessageId().toString(), "tag", tag, "keys", List.of(key), "body", body,
                    "t", System.currentTimeMillis() / 1000.0));
                Cli.emit(out);
            }
        }
    }
}
