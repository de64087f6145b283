package io.github.streamassets.udf;

import com.fasterxml.jackson.core.JsonParseException;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CharsetDecoder;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;

/**
 * A Kafka record's value read against a declared schema, in one strict pass: the typed fields,
 * what did not fit the schema (rescued), and the first reason the record is not usable.
 *
 * <p>The second argument is the spec stream_assets/records/json_records.py builds (JSON, in
 * bytes: a string argument would be decoded again for every row): the
 * schema as Spark's JSON, what a value of the wrong type does (`dead_letter` or `rescue`), and
 * the declared checks of its fields (FieldChecks), which judge a record the schema accepted.
 * It is the same literal on every row, so its compiled form is kept for as long as it does not
 * change. The row returned is the schema's fields, then `_rescued_data`, then `error`; a
 * record the schema refuses has only its `error`; one a field check refuses keeps its fields.
 * json_records.py and checks.py hold the texts of the reasons.
 */
public final class ParseJsonRecord implements UDF2<byte[], byte[], Row> {
  private static final long serialVersionUID = 1L;

  static final String NULL_VALUE = "null value (tombstone)";
  static final String EMPTY_VALUE = "empty value";
  static final String NOT_UTF8 = "value is not valid UTF-8";
  static final String INVALID_JSON = "invalid JSON";
  static final String NOT_OBJECT = "not a JSON object";
  private static final String DUPLICATE = "Duplicate field '";

  private transient byte[] specBytes;
  private transient JsonRecordReader.Record reader;
  private transient FieldChecks checks;
  private transient Object[] refusedTemplate;
  private transient CharsetDecoder utf8;

  @Override
  public Row call(byte[] value, byte[] spec) throws Exception {
    JsonRecordReader.Record record = compiled(spec);
    if (value == null) {
      return refused(NULL_VALUE);
    }
    if (value.length == 0) {
      return refused(EMPTY_VALUE);
    }
    // The JDK's own decoding is the fastest there is (ASCII is one copy), but it replaces
    // what is not UTF-8 with U+FFFD: only a text holding one needs the strict decoder's word.
    String text = new String(value, StandardCharsets.UTF_8);
    if (text.indexOf('\uFFFD') >= 0) {
      try {
        utf8.decode(ByteBuffer.wrap(value));
      } catch (CharacterCodingException e) {
        return refused(NOT_UTF8);
      }
    }
    // Valid UTF-8 has a character a byte only when it is all ASCII.
    boolean bytes = text.length() == value.length && utf8Start(value);
    JsonRecordReader.Context ctx = new JsonRecordReader.Context(text, bytes ? value : null,
        record.rescueWrongTypes);
    Object[] fields;
    // Jackson reads bytes faster than characters; in ASCII a byte's offset is its
    // character's, which the rescued data's slices of `text` rely on.
    try (JsonParser p = bytes ? StrictJson.FACTORY.createParser(value)
        : StrictJson.FACTORY.createParser(text)) {
      JsonToken first = p.nextToken();
      if (first == null) {
        return refused(INVALID_JSON);
      }
      if (first != JsonToken.START_OBJECT) {
        StrictJson.skip(p, first, ctx.strings);
        return refused(p.nextToken() == null ? NOT_OBJECT : INVALID_JSON);
      }
      fields = record.readTop(p, ctx);
      if (p.nextToken() != null) {
        return refused(INVALID_JSON); // a record is one JSON value; text after it is not JSON
      }
    } catch (JsonParseException e) {
      String message = e.getOriginalMessage();
      if (message != null && message.startsWith(DUPLICATE)) {
        String name = message.substring(DUPLICATE.length(), message.lastIndexOf('\''));
        return refused("duplicate key: " + JsonRecordReader.Path.render(ctx.where, name));
      }
      return refused(INVALID_JSON);
    } catch (IOException | RuntimeException e) {
      // Jackson's limits (depth, lengths) and a lone surrogate: not JSON (StrictJson).
      return refused(INVALID_JSON);
    }
    if (ctx.error != null) {
      return refused(ctx.error);
    }
    Object[] row = new Object[fields.length + 2];
    System.arraycopy(fields, 0, row, 0, fields.length);
    row[fields.length] = ctx.rescued();
    // A record refused by a field check keeps its fields, as one a SQL rule refuses does.
    row[fields.length + 1] = checks.verdict(fields);
    return RowFactory.create(row);
  }


  /**
   * Whether Jackson, given these bytes, reads them as UTF-8: it takes a zero byte in the first
   * four for the mark of UTF-16 or UTF-32 ("\0{\0}" would be "{}"). Such a value is not JSON,
   * which the reader of characters says.
   */
  private static boolean utf8Start(byte[] value) {
    for (int i = 0; i < Math.min(4, value.length); i++) {
      if (value[i] == 0) {
        return false;
      }
    }
    return true;
  }

  private JsonRecordReader.Record compiled(byte[] spec) throws IOException {
    // Spark hands every row the same literal's bytes: the identity test is the usual answer.
    if (reader == null || spec != specBytes && !Arrays.equals(spec, specBytes)) {
      JsonNode node = new ObjectMapper().readTree(spec);
      StructType schema = (StructType) DataType.fromJson(node.get("schema").toString());
      reader = JsonRecordReader.compile(schema, "rescue".equals(node.get("wrong_types").asText()));
      checks = FieldChecks.compile(node.get("checks"), schema);
      refusedTemplate = new Object[schema.fields().length + 2];
      utf8 = StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT);
      specBytes = spec;
    }
    return reader;
  }

  private Row refused(String reason) {
    Object[] row = refusedTemplate.clone();
    row[row.length - 1] = reason;
    return RowFactory.create(row);
  }
}
