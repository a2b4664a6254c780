package io.ferrocket.e2e.grpc;

/**
 * Drives the official RocketMQ 5.x Java gRPC client (rocketmq-client-java 5.0.8) for the e2e
 * suite: `send`, `receive` (SimpleConsumer), `push` (PushConsumer) and `txsend`, with the command line and output of
 * ../python/client.py.
 */
public final class Client {
    public static void main(String[] argv) {
        int rc = 0;
        try {
            Cli a = new Cli(argv, 1);
            switch (argv.length > 0 ? argv[0] : "") {
                case "send" -> Send.run(a);
                case "receive" -> Receive.run(a);
                case "push" -> Push.run(a);
                case "txsend" -> TxSend.run(a);
                default -> throw new IllegalArgumentException("usage: send|receive|push|txsend --endpoint HOST:PORT ...");
            }
        } catch (Throwable e) {
            e.printStackTrace();
            rc = 1;
        }
        System.exit(rc); // the client may leave non-daemon threads behind
    }
}
