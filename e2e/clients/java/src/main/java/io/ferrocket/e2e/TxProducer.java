package io.ferrocket.e2e;

import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.rocketmq.client.producer.LocalTransactionState;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.TransactionListener;
import org.apache.rocketmq.client.producer.TransactionMQProducer;
import org.apache.rocketmq.common.message.Message;
import org.apache.rocketmq.common.message.MessageExt;

/**
 * TransactionMQProducer: sends `--count` half messages; the local transaction answers `--action
 * commit|rollback|unknown`, and a check-back answers `--checker commit|rollback`. Stays up until
 * `--until-checks` check-backs arrived or `--hold` seconds passed. Prints `{"id"}` per send and
 * `{"checked"}` per check-back.
 */
public final class TxProducer {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        TransactionMQProducer p = new TransactionMQProducer(a.get("group", "e2e-tx-producer"));
        p.setNamesrvAddr(a.get("namesrv", "127.0.0.1:9876"));
        String action = a.get("action", "commit");
        String checker = a.get("checker", "commit");
        AtomicInteger checks = new AtomicInteger();
        p.setTransactionListener(new TransactionListener() {
            public LocalTransactionState executeLocalTransaction(Message msg, Object arg) {
                return state(action);
            }
            public LocalTransactionState checkLocalTransaction(MessageExt msg) {
                checks.incrementAndGet();
                Args.emit("checked", msg.getTransactionId(), "topic", msg.getTopic(), "body",
                    new String(msg.getBody(), StandardCharsets.UTF_8));
                return state(checker);
            }
        });
        p.start();
        String topic = a.get("topic", "e2e");
        for (int i = 0; i < a.getInt("count", 1); i++) {
            Message m = new Message(topic, a.get("tag", ""), (a.get("body", "tx") + "-" + i).getBytes(StandardCharsets.UTF_8));
            SendResult r = p.sendMessageInTransaction(m, null);
            Args.emit("id", r.getMsgId(), "status", r.getSendStatus().name(), "transactionId", String.valueOf(r.getTransactionId()));
        }
        long deadline = System.currentTimeMillis() + a.getInt("hold", 0) * 1000L;
        int until = a.getInt("until-checks", 0);
        while (System.currentTimeMillis() < deadline && (until == 0 || checks.get() < until)) {
            Thread.sleep(50);
        }
        p.shutdown();
        Args.emit("checks", checks.get());
        System.exit(0); // the client may leave non-daemon threads behind
    }

    private static LocalTransactionState state(String s) {
        switch (s) {
            case "commit": return LocalTransactionState.COMMIT_MESSAGE;
            case "rollback": return LocalTransactionState.ROLLBACK_MESSAGE;
            default: return LocalTransactionState.UNKNOW;
        }
    }
}
