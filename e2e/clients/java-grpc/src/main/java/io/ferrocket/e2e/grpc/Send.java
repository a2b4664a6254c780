package io.ferrocket.e2e.grpc;

import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;

/** `send`: --count NORMAL messages to --topic; one JSON line per acknowledged send. */
final class Send {
    static void run(Cli a) throws Exception {
        String topic = a.get("topic", "");
        String tag = a.get("tag", "TagA");
        try (Producer p = Cli.PROVIDER.newProducerBuilder().setClientConfiguration(a.config()).setTopics(topic).build()) {
            for (int i = 0; i < a.getInt("count", 0); i++) {
                String body = a.get("body-prefix", "body") + "-" + i;
                String key = a.get("key-prefix", "key") + "-" + i;
                Message m = Cli.PROVIDER.newMessageBuilder().setTopic(topic).setTag(tag).setKeys(key)
                    .setBody(body.getBytes(StandardCharsets.UTF_8))
                    .addProperty("origin", "java").addProperty("i", Integer.toString(i))
                    .addProperty("color", List.of("red", "green", "blue").get(i % 3))
                    .build();
                SendReceipt r = p.send(m);
                Cli.emit(Map.of("id", r.getMessageId().toString(), "tag", tag, "keys", List.of(key), "body", body,
                    "t", System.currentTimeMillis() / 1000.0));
            }
        }
    }
}
