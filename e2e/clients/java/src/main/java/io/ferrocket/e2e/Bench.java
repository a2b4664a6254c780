package io.ferrocket.e2e;

import java.util.Arrays;
import java.util.concurrent.Semaphore;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.listener.ConsumeConcurrentlyStatus;
import org.apache.rocketmq.client.consumer.listener.MessageListenerConcurrently;
import org.apache.rocketmq.client.producer.DefaultMQProducer;
import org.apache.rocketmq.client.producer.SendCallback;
import org.apache.rocketmq.client.producer.SendResult;
import org.apache.rocketmq.client.producer.SendStatus;
import org.apache.rocketmq.common.message.Message;

/**
 * The Remoting load generator (RocketMQ's own benchmark.Producer is in rocketmq-example, which is
 * not published as a jar). Prints one JSON line.
 *
 * <ul>
 *   <li>`--mode sync|async --threads N --seconds S --size BYTES`: DefaultMQProducer sends of
 *       `--size` bytes to `--topic` from N threads for S seconds (async: at most `--inflight`
 *       sends outstanding); reports sends per second and, for sync, latency percentiles (ms).
 *   <li>`--mode drain --group G --expect N`: a DefaultMQPushConsumer from the first offset
 *       until N messages arrived (or `--timeout` s); reports messages per second.
 * </ul>
 */
public final class Bench {
    public static void main(String[] argv) throws Exception {
        Args a = new Args(argv);
        String mode = a.get("mode", "sync");
        // The client leaves non-daemon threads behind: exit explicitly, on failure too, or the JVM
        // would outlive an exception thrown here.
        try {
            if (mode.equals("drain")) drain(a);
            else produce(a, mode.equals("async"));
        } catch (Throwable e) {
            e.printStackTrace();
            System.exit(1);
        }
        System.exit(0);
    }

    private static void produce(Args a, boolean async) throws Exception {
        DefaultMQProducer p = new DefaultMQProducer("bench-producer");
        p.setNamesrvAddr(a.get("namesrv", "127.0.0.1:9876"));
        p.setSendMsgTimeout(10_000);
        p.setRetryTimesWhenSendFailed(0);
        p.setRetryTimesWhenSendAsyncFailed(0);
        p.start();
        String topic = a.get("topic", "bench");
        byte[] body = new byte[a.getInt("size", 1024)];
        Arrays.fill(body, (byte) 'x');
        // Routes fetched before the clock starts (a topic just created may take a moment to be routed).
        for (long until = System.currentTimeMillis() + 30_000; ; ) {
            try {
                p.send(new Message(topic, body));
                break;
            } catch (Exception e) {
                if (System.currentTimeMillis() > until) throw e;
                Thread.sleep(500);
            }
        }
        int threads = a.getInt("threads", 8);
        long end = System.nanoTime() + a.getInt("seconds", 10) * 1_000_000_000L;
        AtomicLong ok = new AtomicLong(), errors = new AtomicLong();
        // Latency histogram in 0.1 ms buckets up to 10 s.
        AtomicLongArray hist = new AtomicLongArray(100_001);
        Semaphore inflight = new Semaphore(a.getInt("inflight", 1024));
        long start = System.nanoTime();
        Thread[] ts = new Thread[threads];
        for (int i = 0; i < threads; i++) {
            ts[i] = new Thread(() -> {
                while (System.nanoTime() < end) {
                    Message m = new Message(topic, body);
                    long t0 = System.nanoTime();
                    try {
                        if (async) {
                            inflight.acquire();
                            p.send(m, new SendCallback() {
                                public void onSuccess(SendResult r) {
                                    inflight.release();
                                    (r.getSendStatus() == SendStatus.SEND_OK ? ok : errors).incrementAndGet();
                                }

                                public void onException(Throwable e) {
                                    inflight.release();
                                    errors.incrementAndGet();
                                }
                            });
                        } else {
                            SendResult r = p.send(m);
                            (r.getSendStatus() == SendStatus.SEND_OK ? ok : errors).incrementAndGet();
                            hist.incrementAndGet((int) Math.min(100_000, (System.nanoTime() - t0) / 100_000));
                        }
                    } catch (Exception e) {
                        errors.incrementAndGet();
                    }
                }
            });
            ts[i].start();
        }
        for (Thread t : ts) t.join();
        inflight.acquire(a.getInt("inflight", 1024)); // every async send answered
        double secs = (System.nanoTime() - start) / 1e9;
        p.shutdown();
        Args.emit("mode", async ? "async" : "sync", "threads", threads, "sent", ok.get(), "errors", errors.get(),
            "seconds", secs, "rate", ok.get() / secs, "p50_ms", percentile(hist, 0.50), "p99_ms", percentile(hist, 0.99));
    }

    private static double percentile(AtomicLongArray hist, double q) {
        long total = 0;
        for (int i = 0; i < hist.length(); i++) total += hist.get(i);
        if (total == 0) return 0;
        long seen = 0;
        for (int i = 0; i < hist.length(); i++) {
            seen += hist.get(i);
            if (seen >= q * total) return i / 10.0;
        }
        return hist.length() / 10.0;
    }

    private static void drain(Args a) throws Exception {
        DefaultMQPushConsumer c = Args.pushConsumer(a, "bench-consumer");
        c.setConsumeThreadMin(a.getInt("threads", 8));
        c.setConsumeThreadMax(a.getInt("threads", 8));
        c.setPullBatchSize(32);
        c.setConsumeMessageBatchMaxSize(1);
        c.subscribe(a.get("topic", "bench"), "*");
        long expect = Long.parseLong(a.get("expect", "100000"));
        AtomicLong got = new AtomicLong(), first = new AtomicLong(), last = new AtomicLong();
        Object done = new Object();
        c.registerMessageListener((MessageListenerConcurrently) (msgs, ctx) -> {
            first.compareAndSet(0, System.nanoTime());
            if (got.addAndGet(msgs.size()) >= expect) {
                last.compareAndSet(0, System.nanoTime());
                synchronized (done) { done.notifyAll(); }
            }
            return ConsumeConcurrentlyStatus.CONSUME_SUCCESS;
        });
        c.start();
        long deadline = System.currentTimeMillis() + a.getInt("timeout", 120) * 1000L;
        synchronized (done) {
            while (last.get() == 0 && System.currentTimeMillis() < deadline) done.wait(200);
        }
        long n = got.get();
        double secs = ((last.get() == 0 ? System.nanoTime() : last.get()) - first.get()) / 1e9;
        c.shutdown();
        Args.emit("mode", "drain", "received", n, "seconds", secs, "rate", n / Math.max(secs, 1e-9));
    }
}
