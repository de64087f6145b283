package io.github.streamassets.udf;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import org.apache.spark.sql.api.java.UDF1;

/**
 * Whether a Kafka record's value is one JSON object and nothing after it but whitespace: the
 * check stream_assets/transforms/joins.py makes on impressions and clicks before it reads their
 * fields with Spark's lenient from_json. JSON is StrictJson's; unlike events (ParseEvent), whose
 * contract is Spark's try_parse_json, text after the object is refused. Null for a null value.
 */
public final class WholeJsonObject implements UDF1<byte[], Boolean> {
  private static final long serialVersionUID = 1L;

  @Override
  public Boolean call(byte[] value) {
    if (value == null) {
      return null;
    }
    String text = new String(value, StandardCharsets.UTF_8);
    try (JsonParser p = StrictJson.FACTORY.createParser(text)) {
      JsonToken first = p.nextToken();
      if (first != JsonToken.START_OBJECT) {
        return false;
      }
      StrictJson.skip(p, first, StrictJson.Strings.of(text));
      return p.nextToken() == null;
    } catch (IOException | RuntimeException e) {
      return false;
    }
  }
}
