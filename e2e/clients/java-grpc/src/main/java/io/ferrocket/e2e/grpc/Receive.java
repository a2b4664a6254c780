package io.ferrocket.e2e.grpc;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.FilterExpressionType;
import org.apache.rocketmq.client.apis.consumer.SimpleConsumer;
import org.apache.rocketmq.client.apis.message.MessageView;

/**
 * `receive`: a SimpleConsumer of --group on --topic (--filter, a tag expression or with --sql a
 * SQL92 one) until --count messages or --timeout s; --invisible s, --poll s of long polling,
 * --no-ack leaves them unacknowledged.
 */
final class Receive {
    static void run(Cli a) throws Exception {
        FilterExpression filter = new FilterExpression(a.get("filter", "*"),
            a.flag("sql", false) ? FilterExpressionType.SQL92 : FilterExpressionType.TAG);
        int count = a.getInt("count", 1);
        Duration invisible = Duration.ofSeconds(a.getInt("invisible", 20));
        long deadline = System.nanoTime() + (long) (a.getDouble("timeout", 30) * 1e9);
        try (SimpleConsumer c = Cli.PROVIDER.newSimpleConsumerBuilder().setClientConfiguration(a.config())
                .setConsumerGroup(a.get("group", ""))
                .setAwaitDuration(Duration.ofSeconds(a.getInt("poll", 5)))
                .setSubscriptionExpressions(Map.of(a.get("topic", ""), filter))
                .build()) {
            int got = 0;
            while (got < count && System.nanoTime() < deadline) {
                List<MessageView> batch = c.receive(Math.min(32, count - got), invisible);
                for (MessageView m : batch) {
                    Cli.emit(Cli.described(m));
                    if (a.flag("ack", true)) c.ack(m);
                    got++;
                }
            }
        }
    }
}
