package io.ferrocket.e2e;

import java.util.HashMap;
import java.util.Map;
import org.apache.rocketmq.acl.common.AclClientRPCHook;
import org.apache.rocketmq.acl.common.SessionCredentials;
import org.apache.rocketmq.client.consumer.DefaultMQPushConsumer;
import org.apache.rocketmq.client.consumer.rebalance.AllocateMessageQueueAveragely;
import org.apache.rocketmq.common.consumer.ConsumeFromWhere;
import org.apache.rocketmq.remoting.RPCHook;

/** `--key value` and bare `--flag` arguments, JSON output lines and the consumer set-up, for the drivers. */
final class Args {
    private final Map<String, String> values = new HashMap<>();

    Args(String[] argv) {
        // A driver whose main thread fails exits 1 at once: the client's non-daemon threads would
        // otherwise keep the JVM up until the test's timeout.
        Thread.currentThread().setUncaughtExceptionHandler((t, e) -> {
            e.printStackTrace();
            System.err.flush();
            Runtime.getRuntime().halt(1);
        });
        for (int i = 0; i < argv.length; i++) {
            String k = argv[i].replaceFirst("^--", "");
            boolean hasValue = i + 1 < argv.length && !argv[i + 1].startsWith("--");
            values.put(k, hasValue ? argv[++i] : "true");
        }
    }

    String get(String key, String dflt) {
        return values.getOrDefault(key, dflt);
    }

    int getInt(String key, int dflt) {
        return Integer.parseInt(get(key, Integer.toString(dflt)));
    }

    /** The client's AclClientRPCHook signing as `--access-key` with `--secret-key`; null without them. */
    RPCHook rpcHook() {
        String ak = get("access-key", null);
        return ak == null ? null : new AclClientRPCHook(new SessionCredentials(ak, get("secret-key", "")));
    }

    /** One JSON object from alternating keys and values (strings quoted, numbers as they are, maps as objects). */
    static String json(Object... kv) {
        StringBuilder b = new StringBuilder("{");
        for (int i = 0; i < kv.length; i += 2) {
            if (i > 0) b.append(',');
            b.append(quote(kv[i].toString())).append(':');
            Object v = kv[i + 1];
            if (v instanceof Map) {
                Map<?, ?> m = (Map<?, ?>) v;
                Object[] inner = new Object[m.size() * 2];
                int j = 0;
                for (Map.Entry<?, ?> e : new java.util.TreeMap<>(m).entrySet()) {
                    inner[j++] = e.getKey();
                    inner[j++] = String.valueOf(e.getValue());
                }
                b.append(json(inner));
            } else {
                b.append(v instanceof Number || v instanceof Boolean ? v.toString() : quote(String.valueOf(v)));
            }
        }
        return b.append('}').toString();
    }

    private static String quote(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    /** A push consumer of `--group` (default `group`) on `--namesrv`, from the first offset, signing as {@link #rpcHook}. */
    static DefaultMQPushConsumer pushConsumer(Args a, String group) {
        DefaultMQPushConsumer c = new DefaultMQPushConsumer(a.get("group", group), a.rpcHook(), new AllocateMessageQueueAveragely());
        c.setNamesrvAddr(a.get("namesrv", "127.0.0.1:9876"));
        c.setConsumeFromWhere(ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET);
        // Its own client id: a broadcasting consumer keeps its offsets in ~/.rocketmq_offsets/<client id>,
        // which with the default instance name would carry over from earlier runs.
        c.setInstanceName("e2e-" + ProcessHandle.current().pid() + "-" + System.nanoTime());
        // Shutdown lets the listener threads finish, so the offsets it persists cover every message consumed.
        c.setAwaitTerminationMillisWhenShutdown(10000);
        return c;
    }

    static synchronized void emit(Object... kv) {
        System.out.println(json(kv));
        System.out.flush();
    }
}
