package io.ferrocket.e2e.grpc;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.rocketmq.client.apis.message.Message;
import org.apache.rocketmq.client.apis.producer.Producer;
import org.apache.rocketmq.client.apis.producer.SendReceipt;
import org.apache.rocketmq.client.apis.producer.Transaction;
import org.apache.rocketmq.client.apis.producer.TransactionResolution;

/**
 * `txsend`: --count TRANSACTION messages, each then committed, rolled back or left open
 * (--action); the TransactionChecker answers check-backs with --checker (commit, rollback,
 * unknown) and prints {"check": id}. Stays up --hold s, or until --until-checks check-backs came.
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
        CountDownLatch enough = new CountDownLatch(untilChecks > 0 ? untilChecks : Integer.MAX_VALUE);
        try (Producer p = Cli.PROVIDER.newProducerBuilder().setClientConfiguration(a.config()).setTopics(topic)
                .setTransactionChecker(view -> {
                    Cli.emit(Map.of("check", view.getMessageId().toString(), "answer", checker));
                    enough.countDown();
                    return answer;
                })
                .build()) {
            for (int i = 0; i < a.getInt("count", 0); i++) {
                String body = a.get("body-prefix", "body") + "-" + i;
                Message m = Cli.PROVIDER.newMessageBuilder().setTopic(topic).setTag(a.get("tag", "TagA"))
                    .setBody(body.getBytes(StandardCharsets.UTF_8)).build();
                Transaction tx = p.beginTransaction();
                SendReceipt r = p.send(m, tx);
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
