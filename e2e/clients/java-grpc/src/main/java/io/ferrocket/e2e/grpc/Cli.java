package io.ferrocket.e2e.grpc;

import com.google.gson.Gson;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import org.apache.rocketmq.client.apis.ClientConfiguration;
import org.apache.rocketmq.client.apis.ClientServiceProvider;
import org.apache.rocketmq.client.apis.message.MessageView;

/**
 * The command line shared by the roles (same contract as ../python/client.py: `--key value`, bare
 * `--flag`, `--no-flag`), JSON output lines, and the client configuration: the client's defaults,
 * TLS included, with only the endpoint and a 10 s request timeout set.
 */
final class Cli {
    static final ClientServiceProvider PROVIDER = ClientServiceProvider.loadService();
    private static final Gson GSON = new Gson();
    private final Map<String, String> values = new HashMap<>();

    Cli(String[] argv, int from) {
        for (int i = from; i < argv.length; i++) {
            String k = argv[i].replaceFirst("^--", "");
            boolean hasValue = i + 1 < argv.length && !argv[i + 1].startsWith("--");
            if (!hasValue && k.startsWith("no-")) values.put(k.substring(3), "false");
            else values.put(k, hasValue ? argv[++i] : "true");
        }
    }

    String get(String key, String dflt) {
        return values.getOrDefault(key, dflt);
    }

    int getInt(String key, int dflt) {
        return Integer.parseInt(get(key, Integer.toString(dflt)));
    }

    double getDouble(String key, double dflt) {
        return Double.parseDouble(get(key, Double.toString(dflt)));
    }

    boolean flag(String key, boolean dflt) {
        return Boolean.parseBoolean(get(key, Boolean.toString(dflt)));
    }

    ClientConfiguration config() {
        return ClientConfiguration.newBuilder()
            .setEndpoints(get("endpoint", "127.0.0.1:8081"))
            .setRequestTimeout(Duration.ofSeconds(10))
            .build();
    }

    /** Prints one JSON line atomically (listener and checker threads print too). */
    static synchronized void emit(Map<String, ?> row) {
        System.out.println(GSON.toJson(row));
        System.out.flush();
    }

    /** A received message as ../python/client.py describes it. */
    static Map<String, Object> described(MessageView m) {
        Map<String, Object> d = new LinkedHashMap<>();
        d.put("id", m.getMessageId().toString());
        d.put("tag", m.getTag().orElse(""));
        d.put("keys", new TreeSet<>(m.getKeys()));
        d.put("body", StandardCharsets.UTF_8.decode(m.getBody()).toString());
        d.put("attempt", m.getDeliveryAttempt());
        d.put("t", System.currentTimeMillis() / 1000.0);
        d.put("props", new TreeMap<>(m.getProperties()));
        m.getMessageGroup().ifPresent(g -> d.put("group", g));
        return d;
    }
}
