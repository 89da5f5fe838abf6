// A producer built on the Apache Kafka Java client, for the integration tests: a non-Python client
// that compresses its batches the way most production producers do.
//
// Usage: java -cp <kafka libs>/*:<classes> RecordFileProducer BOOTSTRAP TOPIC COMPRESSION INPUT [key=value ...]
//
// INPUT is a binary file of records, each: int32 partition (-1: the partitioner chooses),
// int32 key length (-1: no key), the key bytes, int32 value length, the value bytes (big-endian,
// as java.io.DataInputStream reads them). Extra key=value arguments are producer properties and
// override the defaults below (acks=all, linger.ms=50, batch.size=256 KiB, idempotence on).
//
// Every record is sent before any result is awaited, so records pile up into multi-record batches
// that the client compresses with COMPRESSION (none, gzip, snappy, lz4, zstd). Prints one line
// "RECORD <index> <partition> <offset>" per record in input order, then "METRIC <name> <value>"
// lines for the producer's compression and batching metrics. Exits 0 when every record was
// acknowledged, 1 on any send failure (naming the record), 2 on bad usage or an unreadable INPUT.
import java.io.BufferedInputStream;
import java.io.DataInputStream;
import java.io.EOFException;
import java.io.FileInputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class RecordFileProducer {
    private static final String[] METRICS = {
        "compression-rate-avg", "batch-size-avg", "records-per-request-avg", "record-error-total",
        "record-send-total"};

    private RecordFileProducer() {}

    private static byte[] readBytes(DataInputStream in, int length) throws IOException {
        byte[] out = new byte[length];
        in.readFully(out);
        return out;
    }

    static List<ProducerRecord<byte[], byte[]>> readRecords(String topic, String path) throws IOException {
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        try (DataInputStream in = new DataInputStream(new BufferedInputStream(new FileInputStream(path)))) {
            while (true) {
                int partition;
                try {
                    partition = in.readInt();
                } catch (EOFException end) {
                    return records;
                }
                int keyLength = in.readInt();
                byte[] key = keyLength < 0 ? null : readBytes(in, keyLength);
                byte[] value = readBytes(in, in.readInt());
                records.add(new ProducerRecord<>(topic, partition < 0 ? null : partition, key, value));
            }
        }
    }

    public static void main(String[] args) throws InterruptedException {
        if (args.length < 4) {
            System.err.println("usage: RecordFileProducer BOOTSTRAP TOPIC COMPRESSION INPUT [key=value ...]");
            System.exit(2);
        }
        Properties props = new Properties();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args[0]);
        props.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, args[2]);
        props.put(ProducerConfig.ACKS_CONFIG, "all");
        props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
        props.put(ProducerConfig.LINGER_MS_CONFIG, "50");
        props.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(256 * 1024));
        props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
        for (int i = 4; i < args.length; i++) {
            int eq = args[i].indexOf('=');
            if (eq <= 0) {
                System.err.println("not a key=value producer property: " + args[i]);
                System.exit(2);
            }
            props.put(args[i].substring(0, eq), args[i].substring(eq + 1));
        }
        List<ProducerRecord<byte[], byte[]>> records;
        try {
            records = readRecords(args[1], args[3]);
        } catch (IOException e) {
            System.err.println("cannot read records from " + args[3] + ": " + e);
            System.exit(2);
            return;
        }
        int failures = 0;
        StringBuilder out = new StringBuilder();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(props)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>(records.size());
            for (ProducerRecord<byte[], byte[]> record : records) {
                sent.add(producer.send(record));
            }
            producer.flush();
            for (int i = 0; i < sent.size(); i++) {
                try {
                    RecordMetadata md = sent.get(i).get();
                    out.append("RECORD ").append(i).append(' ').append(md.partition()).append(' ')
                       .append(md.offset()).append('\n');
                } catch (ExecutionException e) {
                    failures++;
                    System.err.println("record " + i + " was not delivered: " + e.getCause());
                }
            }
            for (Map.Entry<MetricName, ? extends Metric> m : producer.metrics().entrySet()) {
                MetricName name = m.getKey();
                if (name.group().equals("producer-metrics") && List.of(METRICS).contains(name.name())) {
                    out.append("METRIC ").append(name.name()).append(' ').append(m.getValue().metricValue())
                       .append('\n');
                }
            }
        } catch (RuntimeException e) {  // bad configuration (e.g. an unknown compression.type), no broker
            System.err.println("producer failed: " + e);
            System.exit(1);
        }
        System.out.print(out);
        System.out.flush();
        System.exit(failures == 0 ? 0 : 1);
    }
}
