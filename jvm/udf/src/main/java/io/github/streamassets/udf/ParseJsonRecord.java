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
import org.apache.spark.sql.Row;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.api.java.UDF2;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.StructType;

/**
 * A Kafka record's value read against a declared schema, in one strict pass: the typed fields,
 * what did not fit the schema (rescued), and the first reason the record is not usable.
 *
 * <p>The second argument is the spec stream_assets/records/json_records.py builds: the
 * schema as Spark's JSON, and what a value of the wrong type does (`dead_letter` or `rescue`).
 * It is the same literal on every row, so its compiled form is kept for as long as it does not
 * change. The row returned is the schema's fields, then `_rescued_data`, then `error`; a
 * refused record has only its `error`. json_records.py holds the texts of the reasons.
 */
public final class ParseJsonRecord implements UDF2<byte[], String, Row> {
  private static final long serialVersionUID = 1L;

  static final String NULL_VALUE = "null value (tombstone)";
  static final String EMPTY_VALUE = "empty value";
  static final String NOT_UTF8 = "value is not valid UTF-8";
  static final String INVALID_JSON = "invalid JSON";
  static final String NOT_OBJECT = "not a JSON object";
  private static final String DUPLICATE = "Duplicate field '";

  private transient String specText;
  private transient JsonRecordReader.Record reader;
  private transient Object[] refusedTemplate;
  private transient CharsetDecoder utf8;

  @Override
  public Row call(byte[] value, String spec) throws Exception {
    JsonRecordReader.Record record = compiled(spec);
    if (value == null) {
      return refused(NULL_VALUE);
    }
    if (value.length == 0) {
      return refused(EMPTY_VALUE);
    }
    String text;
    try {
      text = utf8.decode(ByteBuffer.wrap(value)).toString();
    } catch (CharacterCodingException e) {
      return refused(NOT_UTF8);
    }
    JsonRecordReader.Context ctx = new JsonRecordReader.Context(text, record.rescueWrongTypes);
    Object[] fields;
    try (JsonParser p = StrictJson.FACTORY.createParser(text)) {
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
    return RowFactory.create(row);
  }

  private JsonRecordReader.Record compiled(String spec) throws IOException {
    if (reader == null || !spec.equals(specText)) {
      JsonNode node = new ObjectMapper().readTree(spec);
      StructType schema = (StructType) DataType.fromJson(node.get("schema").toString());
      reader = JsonRecordReader.compile(schema, "rescue".equals(node.get("wrong_types").asText()));
      refusedTemplate = new Object[schema.fields().length + 2];
      utf8 = StandardCharsets.UTF_8.newDecoder()
          .onMalformedInput(CodingErrorAction.REPORT)
          .onUnmappableCharacter(CodingErrorAction.REPORT);
      specText = spec;
    }
    return reader;
  }

  private Row refused(String reason) {
    Object[] row = refusedTemplate.clone();
    row[row.length - 1] = reason;
    return RowFactory.create(row);
  }
}
