package io.ferrocket.e2e.spring;

import java.nio.charset.StandardCharsets;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.common.message.MessageExt;
import org.apache.rocketmq.spring.annotation.RocketMQMessageListener;
import org.apache.rocketmq.spring.core.RocketMQListener;
import org.apache.rocketmq.spring.core.RocketMQTemplate;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.CommandLineRunner;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.stereotype.Component;

/**
 * Sends `e2e.count` messages to `e2e.topic` with RocketMQTemplate.syncSend, receives them with a
 * @RocketMQMessageListener, prints one JSON line per send and per receipt and exits 0 once all
 * arrived (1 after `e2e.timeout` seconds). Run with `--rocketmq.name-server=H:P`.
 */
@SpringBootApplication
public class App implements CommandLineRunner {
    static final Set<String> RECEIVED = ConcurrentHashMap.newKeySet();

    private final RocketMQTemplate template;

    @Value("${e2e.topic}") String topic;
    @Value("${e2e.count:10}") int count;
    @Value("${e2e.timeout:60}") int timeout;

    App(RocketMQTemplate template) {
        this.template = template;
    }

    public static void main(String[] args) {
        SpringApplication.run(App.class, args);
    }

    @Override
    public void run(String... args) throws Exception {
        for (int i = 0; i < count; i++) {
            SendResult r = template.syncSend(topic, "spring-" + i);
            emit("sent", r.getMsgId());
        }
        long deadline = System.currentTimeMillis() + timeout * 1000L;
        while (RECEIVED.size() < count && System.currentTimeMillis() < deadline) Thread.sleep(50);
        System.out.println("{\"received\":" + RECEIVED.size() + "}");
        System.exit(RECEIVED.size() >= count ? 0 : 1);
    }

    static synchronized void emit(String key, String id) {
        System.out.println("{\"" + key + "\":\"" + id + "\"}");
    }

    /** The listener: every message of the topic, by id. */
    @Component
    @RocketMQMessageListener(topic = "${e2e.topic}", consumerGroup = "${e2e.group}")
    static class Listener implements RocketMQListener<MessageExt> {
        @Override
        public void onMessage(MessageExt m) {
            if (new String(m.getBody(), StandardCharsets.UTF_8).startsWith("spring-") && RECEIVED.add(m.getMsgId())) {
                emit("received", m.getMsgId());
            }
        }
    }
}
