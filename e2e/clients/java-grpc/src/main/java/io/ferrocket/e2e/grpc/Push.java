package io.ferrocket.e2e.grpc;

import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.apache.rocketmq.client.apis.consumer.ConsumeResult;
import org.apache.rocketmq.client.apis.consumer.FilterExpression;
import org.apache.rocketmq.client.apis.consumer.FilterExpressionType;
import org.apache.rocketmq.client.apis.consumer.PushConsumer;

/**
 * `push`: a PushConsumer of --group on --topic (--filter, --sql) printing every consume call with
 * its result; it fails messages whose index (the number after the body's last '-') is a multiple
 * of --fail-every, and is done after --count distinct successes or --timeout s.
 */
final class Push {
    static void run(Cli a) throws Exception {
        FilterExpression filter = new FilterExpression(a.get("filter", "*"),
            a.flag("sql", false) ? FilterExpressionType.SQL92 : FilterExpressionType.TAG);
        int failEvery = a.getInt("fail-every", 0);
        int count = a.getInt("count", 1);
        Set<String> ok = ConcurrentHashMap.newKeySet();
        CountDownLatch done = new CountDownLatch(1);
        try (PushConsumer c = Cli.PROVIDER.newPushConsumerBuilder().setClientConfiguration(a.config())
                .setConsumerGroup(a.get("group", ""))
                .setSubscriptionExpressions(Map.of(a.get("topic", ""), filter))
                .setMessageListener(m -> {
                    String body = StandardCharsets.UTF_8.decode(m.getBody().duplicate()).toString();
                    int i = Integer.parseInt(body.substring(body.lastIndexOf('-') + 1));
                    boolean fail = failEvery > 0 && i % failEvery == 0;
                    Map<String, Object> d = Cli.described(m);
                    d.put("result", fail ? "failure" : "success");
                    Cli.emit(d);
                    if (!fail && ok.add(m.getMessageId().toString()) && ok.size() >= count) done.countDown();
                    return fail ? ConsumeResult.FAILURE : ConsumeResult.SUCCESS;
                })
                .build()) {
            done.await((long) (a.getDouble("timeout", 30) * 1000), TimeUnit.MILLISECONDS);
        }
    }
}
