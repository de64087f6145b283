package io.github.streamassets.udf;

import static io.github.streamassets.udf.StrictJson.skip;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.IOException;
import io.github.streamassets.udf.StrictJson.Strings;
import java.nio.charset.StandardCharsets;
import java.util.Map;
import java.util.TreeMap;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF1;

/**
 * One strict pass over a Kafka record's JSON: the event's fields, and the verdict of every check
 * that needs the JSON, in the order stream_assets/transforms/events.py lists them.
 *
 * <p>What counts as JSON is what Spark's VARIANT parser (try_parse_json) accepts, the contract
 * before this function (StrictJson): Jackson's default factory and limits, the first value read
 * and anything after it ignored, duplicate keys refused at any depth, a lone surrogate refused.
 * Unlike Spark 4.2's parser, which builds a Jackson factory per record and then needs a Cast per
 * value to get strings out of the VARIANT, it reads each value once (docs/benchmarks.md). The
 * checks that need no JSON (null, empty, UTF-8) and the timestamp's cast stay in Spark, in
 * events.py.
 *
 * <p>Returns a row of the struct events.py registers it with (_PARSER_TYPE there): the four
 * strings (a field that is not a string carries its JSON text), the properties when they are an
 * object of strings (keys sorted), and the first failed check's message or null.
 */
public final class ParseEvent implements UDF1<byte[], Row> {
  private static final long serialVersionUID = 1L;

  // The texts are part of the contract; events.py defines them and the tests hold them equal.
  static final String INVALID_JSON = "invalid JSON";
  static final String NOT_OBJECT = "JSON value is not an object";
  static final int EVENT_TYPE_MAX_BYTES = 80;
  static final String UNUSABLE_EVENT_TYPE =
      "unusable event_type: empty, a control character or over "
          + EVENT_TYPE_MAX_BYTES + " bytes";
  static final String BAD_PROPERTIES = "wrong type: properties must be an object of strings";

  // The string fields in the order of their checks: required ones first.
  private static final String[] NAMES = {"event_id", "timestamp", "event_type", "user_id"};
  private static final int REQUIRED = 2;
  private static final int EVENT_ID = 0;
  private static final int TIMESTAMP = 1;
  private static final int EVENT_TYPE = 2;
  private static final int USER_ID = 3;

  private static final Row NOTHING = RowFactory.create(null, null, null, null, null, null);
  private static final Row INVALID = RowFactory.create(null, null, null, null, null, INVALID_JSON);
  private static final Row NOT_AN_OBJECT =
      RowFactory.create(null, null, null, null, null, NOT_OBJECT);

  @Override
  public Row call(byte[] value) {
    if (value == null || value.length == 0) {
      return NOTHING;
    }
    String text = new String(value, StandardCharsets.UTF_8);
    Strings read = Strings.of(text);
    Fields fields = new Fields();
    try (JsonParser p = StrictJson.FACTORY.createParser(text)) {
      JsonToken first = p.nextToken();
      if (first == null) {
        return INVALID;
      }
      if (first != JsonToken.START_OBJECT) {
        skip(p, first, read);
        return NOT_AN_OBJECT;
      }
      JsonToken token;
      while ((token = p.nextToken()) == JsonToken.FIELD_NAME) {
        fields.read(read.name(p), p, text, read);
      }
      if (token != JsonToken.END_OBJECT) {
        return INVALID;
      }
    } catch (IOException | RuntimeException e) {
      // Jackson's syntax errors, its limits (depth, lengths) and duplicate keys: all of them are
      // what Spark's VARIANT parser calls invalid JSON.
      return INVALID;
    }
    return fields.row();
  }

  /** What one record's object holds, field by field; the last of a name cannot differ. */
  private static final class Fields {
    private final String[] texts = new String[NAMES.length];
    private final boolean[] isString = new boolean[NAMES.length];
    private Map<String, String> properties;
    private boolean propertiesPresent;
    private boolean propertiesOk = true;

    void read(String name, JsonParser p, String text, Strings read) throws IOException {
      JsonToken value = p.nextToken();
      int slot = slot(name);
      if (slot >= 0) {
        isString[slot] = value == JsonToken.VALUE_STRING;
        if (value == JsonToken.VALUE_STRING) {
          texts[slot] = read.text(p);
        } else if (value == JsonToken.VALUE_NULL) {
          texts[slot] = null; // JSON null is a missing field
        } else {
          texts[slot] = jsonText(p, value, text, read);
        }
      } else if (name.equals("properties")) {
        readProperties(p, value, read);
      } else {
        skip(p, value, read);
      }
    }

    private void readProperties(JsonParser p, JsonToken value, Strings read) throws IOException {
      propertiesPresent = value != JsonToken.VALUE_NULL;
      propertiesOk = value == JsonToken.START_OBJECT;
      properties = null;
      if (value != JsonToken.START_OBJECT) {
        skip(p, value, read);
        return;
      }
      properties = new TreeMap<>();
      while (p.nextToken() == JsonToken.FIELD_NAME) {
        String key = read.name(p);
        JsonToken entry = p.nextToken();
        if (entry == JsonToken.VALUE_STRING) {
          properties.put(key, read.text(p));
        } else {
          propertiesOk = false; // null, a number, an object...: not an object of strings
          skip(p, entry, read);
        }
      }
    }

    Row row() {
      String error = verdict();
      return RowFactory.create(texts[EVENT_ID], texts[EVENT_TYPE], texts[USER_ID],
          texts[TIMESTAMP], error == null && propertiesPresent ? properties : null, error);
    }

    private String verdict() {
      for (int slot = 0; slot < NAMES.length; slot++) {
        if (slot < REQUIRED && texts[slot] == null) {
          return "missing " + NAMES[slot];
        }
        if (texts[slot] != null && !isString[slot]) {
          return "wrong type: " + NAMES[slot] + " must be a string";
        }
      }
      if (texts[EVENT_TYPE] != null && !usableFolderName(texts[EVENT_TYPE])) {
        return UNUSABLE_EVENT_TYPE;
      }
      return propertiesPresent && !propertiesOk ? BAD_PROPERTIES : null;
    }
  }

  /** raw_events is partitioned by event_type: it must make a folder name (events.py). */
  private static boolean usableFolderName(String eventType) {
    if (eventType.isEmpty()) {
      return false;
    }
    int bytes = 0;
    for (int i = 0; i < eventType.length(); i++) {
      char c = eventType.charAt(i);
      if (c < 0x20 || c == 0x7f) {
        return false;
      }
      if (Character.isHighSurrogate(c) && i + 1 < eventType.length()
          && Character.isLowSurrogate(eventType.charAt(i + 1))) {
        bytes += 4;
        i++;
      } else {
        bytes += c < 0x80 ? 1 : c < 0x800 ? 2 : 3;
      }
    }
    return bytes <= EVENT_TYPE_MAX_BYTES;
  }

  private static int slot(String name) {
    for (int i = 0; i < NAMES.length; i++) {
      if (NAMES[i].equals(name)) {
        return i;
      }
    }
    return -1;
  }

  /** The JSON text of a value that is not a string, as the record wrote it. */
  private static String jsonText(JsonParser p, JsonToken first, String text, Strings read)
      throws IOException {
    if (!first.isStructStart()) {
      skip(p, first, read);
      return p.getText();
    }
    int start = (int) p.currentTokenLocation().getCharOffset();
    skip(p, first, read);
    return text.substring(start, (int) p.currentLocation().getCharOffset());
  }
}
