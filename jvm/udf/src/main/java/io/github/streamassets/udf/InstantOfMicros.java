package io.github.streamassets.udf;

import java.time.Instant;
import org.apache.spark.sql.api.java.UDF1;

/**
 * An instant given as the text of its microseconds since the epoch.
 *
 * <p>Why text: Spark writes a timestamp literal into the Java code it generates, so a query
 * whose timestamp changes with every micro-batch (current_timestamp(), the time a batch was
 * written) compiles its code anew for every batch. A string literal is handed to the code by
 * reference instead, so the code stays the same and is compiled once; this function reads the
 * instant back (stream_assets/records/functions.py, `instant`). The text is the same on every
 * row of a batch, so its instant is kept until the text changes.
 */
public final class InstantOfMicros implements UDF1<String, Instant> {
  private static final long serialVersionUID = 1L;

  private transient String text;
  private transient Instant instant;

  @Override
  public Instant call(String micros) {
    if (micros == null) {
      return null;
    }
    if (!micros.equals(text)) {
      long value = Long.parseLong(micros);
      instant = Instant.ofEpochSecond(
          Math.floorDiv(value, 1_000_000L), Math.floorMod(value, 1_000_000L) * 1_000L);
      text = micros;
    }
    return instant;
  }
}
