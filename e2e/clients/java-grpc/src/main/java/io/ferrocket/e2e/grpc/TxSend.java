package io.ferrocket.e2e.grpc;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.Transaction;
import org.apache.rocketmq.client.apis.producer.TransactionResolution;

/**
 * `txsend`: --count TRANSACTION messages, each then committed, rolled back or left open
 * (--action); the TransactionChecker answers check-backs with --checker (commit, rollback,
 * unknown) and prints {"check": id}. Stays up --hold s, or until --until-checks check-backs came, or
 * until --until-checked of the messages this process sent were checked back (Apache RocketMQ may
 * also check back an earlier producer's transaction that already ended: apache/rocketmq#1517).
 */
final class TxSend {
    static void run(Cli a) throws Exception {
        String topic = a.get("topic", "");
        String checker = a.get("checker", "commit");
        TransactionResolution answer = switch (checker) {
            case "commit" -> TransactionResolution.COMMIT;
            case "rollback" -> TransactionResolution.ROLLBACK;
            default -> TransactionResolution.UNKNOWN;
        };
        int untilChecks = a.getInt("until-checks", 0);
        int untilChecked = a.getInt("until-checked", 0);
        CountDownLatch enough = new CountDownLatch(1);
        AtomicInteger checks = new AtomicInteger();
        Set<String> mine = ConcurrentHashMap.newKeySet();
        Set<String> checked = ConcurrentHashMap.newKeySet();
        try (Producer p = Cli.PROVIDER.newProducerBuilder().setClientConfiguration(a.config()).setTopics(topic)
                .setTransactionChecker(view -> {
                    String id = view.getMessageId().toString();
                    Cli.emit(Map.of("check", id, "answer", checker));
                    if (mine.contains(id)) {
                        checked.add(id);
                    }
                    if (untilChecks > 0 && checks.incrementAndGet() >= untilChecks
                        || untilChecked > 0 && checked.size() >= untilChecked) {
                        enough.countDown();
                    }
                    return answer;
                })
                .build()) {
            for (int i = 0; i < a.getInt("count", 0); i++) {
                String body = a.get("body-prefix", "body") + "-" + i;
                Message m = Cli.PROVIDER.newMessageBuilder().setTopic(topic).setTag(a.get("tag", "TagA"))
                    .setBody(body.getBytes(StandardCharsets.UTF_8)).build();
                Transaction tx = p.beginTransaction();
                SendReceipt r = p.send(m, tx);
                mine.add(r.getMessageId().toString());
                Cli.emit(Map.of("id", r.getMessageId().toString(), "body", body));
                switch (a.get("action", "commit")) {
                    case "commit" -> tx.commit();
                    case "rollback" -> tx.rollback();
                    default -> { }
                }
            }
            enough.await((long) (a.getDouble("hold", 0) * 1000), TimeUnit.MILLISECONDS);
        }
    }
}
