package io.github.streamassets.udf;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.io.JsonStringEncoder;
import java.io.IOException;
import java.math.BigDecimal;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.apache.spark.sql.RowFactory;
import org.apache.spark.sql.types.ArrayType;
import org.apache.spark.sql.types.BinaryType;
import org.apache.spark.sql.types.BooleanType;
import org.apache.spark.sql.types.ByteType;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DateType;
import org.apache.spark.sql.types.DecimalType;
import org.apache.spark.sql.types.DoubleType;
import org.apache.spark.sql.types.FloatType;
import org.apache.spark.sql.types.IntegerType;
import org.apache.spark.sql.types.LongType;
import org.apache.spark.sql.types.MapType;
import org.apache.spark.sql.types.ShortType;
import org.apache.spark.sql.types.StringType;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.types.TimestampNTZType;
import org.apache.spark.sql.types.TimestampType;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * Readers of JSON values into the Java values Spark converts to its types (a string as Spark's
 * own UTF8String), compiled once per schema. A value of the wrong type is a verdict naming its path
 * (`wrong type: items[2].qty must be an integer`) or, when the declaration says so, is rescued
 * with the field left null; a field the schema does not name is always rescued. The JSON is
 * always read to its end, so that a malformed value after a wrong one still makes the record
 * invalid JSON (StrictJson's contract).
 */
final class JsonRecordReader {
  private JsonRecordReader() {}

  /** What one record's read collects besides its values. */
  static final class Context {
    final String text;
    /** The record's bytes when the parser reads them (all ASCII), else null. */
    final byte[] bytes;
    final boolean rescueWrongTypes;
    final StrictJson.Strings strings;
    /** The object whose keys are being read, for a duplicate key's reason. */
    Path where;
    /** The first verdict, in the schema's order within each object. */
    String error;
    private StringBuilder rescued;

    Context(String text, byte[] bytes, boolean rescueWrongTypes) {
      this.text = text;
      this.bytes = bytes;
      this.rescueWrongTypes = rescueWrongTypes;
      this.strings = StrictJson.Strings.of(text);
    }

    /** Keeps the value at the parser's current token, as the record wrote it, under `path`. */
    void rescue(JsonParser p, JsonToken first, Path path) throws IOException {
      int start = offset(p.currentTokenLocation());
      StrictJson.skip(p, first, strings);
      int end = offset(p.currentLocation());
      if (first.isScalarValue()) {
        end = start + scalarLength(p, first, start);
      }
      rescued = rescued == null ? new StringBuilder("{") : rescued.append(',');
      rescued.append('"');
      JsonStringEncoder.getInstance().quoteAsString(path.toString(), rescued);
      rescued.append("\":").append(text, start, end);
    }

    private int scalarLength(JsonParser p, JsonToken token, int start) {
      // After a scalar, Jackson's location is past its last character except for strings,
      // whose closing quote it may not have consumed yet: find it from the text.
      if (token != JsonToken.VALUE_STRING) {
        int end = offset(p.currentLocation());
        return end - start;
      }
      int i = start + 1;
      while (text.charAt(i) != '"') {
        i += text.charAt(i) == '\\' ? 2 : 1;
      }
      return i + 1 - start;
    }

    /**
     * The string at the parser's token as Spark holds it: a view of the record's bytes when
     * they are read and the string has no escape (its text is as long as its bytes between
     * the quotes), so that it is neither made a Java string nor encoded back to UTF-8.
     */
    UTF8String utf8(JsonParser p) throws IOException {
      if (bytes != null) {
        long start = p.currentTokenLocation().getByteOffset() + 1;
        int length = p.getTextLength(); // reads the string to its end, validating it
        if (p.currentLocation().getByteOffset() - 1 - start == length) {
          return UTF8String.fromBytes(bytes, (int) start, length);
        }
      }
      return UTF8String.fromString(strings.text(p));
    }

    /** Where `at` is in `text`: a parser of characters counts them, one of bytes bytes. */
    private static int offset(JsonLocation at) {
      return (int) Math.max(at.getCharOffset(), at.getByteOffset());
    }

    String rescued() {
      return rescued == null ? null : rescued.append('}').toString();
    }
  }

  /** Where a value is in the record, rendered only for a verdict. */
  static final class Path {
    final Path parent;
    final String name;
    final int index;

    Path(Path parent, String name) {
      this(parent, name, -1);
    }

    private Path(Path parent, String name, int index) {
      this.parent = parent;
      this.name = name;
      this.index = index;
    }

    Path at(int i) {
      return new Path(this, null, i);
    }

    static String render(Path parent, String name) {
      return new Path(parent, name).toString();
    }

    @Override
    public String toString() {
      String head = parent == null ? "" : parent.toString();
      if (name == null) {
        return head + "[" + index + "]";
      }
      return head.isEmpty() ? name : head + "." + name;
    }
  }

  /** A sentinel for "no value here, and the verdict or the rescue is already recorded". */
  static final Object WRONG = new Object();

  abstract static class Reader {
    /** What a wrong value's reason says it must be. */
    final String expected;

    Reader(String expected) {
      this.expected = expected;
    }

    /** The value starting at `token` (never VALUE_NULL), or WRONG after skipping it. */
    abstract Object read(JsonParser p, JsonToken token, Context ctx, Path path) throws IOException;

    /** The value is of the wrong type: skip or rescue it and say so once. */
    final Object wrong(JsonParser p, JsonToken token, Context ctx, Path path) throws IOException {
      if (ctx.rescueWrongTypes) {
        ctx.rescue(p, token, path);
        return null;
      }
      StrictJson.skip(p, token, ctx.strings);
      return wrong(ctx, path);
    }

    final Object wrong(Context ctx, Path path) {
      if (ctx.error == null) {
        ctx.error = "wrong type: " + path + " must be " + expected;
      }
      return WRONG;
    }
  }

  static Reader of(DataType type) {
    if (type instanceof StringType) {
      return new Scalar("a string") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
          return t == JsonToken.VALUE_STRING ? ctx.utf8(p) : null;
        }
      };
    }
    if (type instanceof BooleanType) {
      return new Scalar("a boolean") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) {
          return t == JsonToken.VALUE_TRUE ? Boolean.TRUE
              : t == JsonToken.VALUE_FALSE ? Boolean.FALSE : null;
        }
      };
    }
    if (type instanceof ByteType) {
      return integral("an integer of 8 bits", Byte.MIN_VALUE, Byte.MAX_VALUE, v -> (byte) v);
    }
    if (type instanceof ShortType) {
      return integral("an integer of 16 bits", Short.MIN_VALUE, Short.MAX_VALUE, v -> (short) v);
    }
    if (type instanceof IntegerType) {
      return integral("an integer of 32 bits", Integer.MIN_VALUE, Integer.MAX_VALUE, v -> (int) v);
    }
    if (type instanceof LongType) {
      return integral("an integer", Long.MIN_VALUE, Long.MAX_VALUE, v -> v);
    }
    if (type instanceof DoubleType || type instanceof FloatType) {
      boolean single = type instanceof FloatType;
      return new Scalar("a finite number") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
          if (!t.isNumeric()) {
            return null;
          }
          double d = p.getDoubleValue();
          if (Double.isInfinite(d) || single && Float.isInfinite((float) d)) {
            return null; // beyond the type's range: not silently infinity
          }
          return single ? (Object) (float) d : (Object) d;
        }
      };
    }
    if (type instanceof DecimalType decimal) {
      return new DecimalReader(decimal);
    }
    if (type instanceof TimestampType) {
      return new Scalar("an ISO-8601 timestamp") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
          return t == JsonToken.VALUE_STRING ? Iso8601.instant(ctx.strings.text(p)) : null;
        }
      };
    }
    if (type instanceof TimestampNTZType) {
      return new Scalar("an ISO-8601 timestamp without a time zone") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
          return t == JsonToken.VALUE_STRING ? Iso8601.local(ctx.strings.text(p)) : null;
        }
      };
    }
    if (type instanceof DateType) {
      return new Scalar("an ISO-8601 date") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
          return t == JsonToken.VALUE_STRING ? Iso8601.date(ctx.strings.text(p)) : null;
        }
      };
    }
    if (type instanceof BinaryType) {
      return new Scalar("base64 text") {
        @Override
        Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
          if (t != JsonToken.VALUE_STRING) {
            return null;
          }
          try {
            return Base64.getDecoder().decode(ctx.strings.text(p));
          } catch (IllegalArgumentException e) {
            return null;
          }
        }
      };
    }
    if (type instanceof ArrayType array) {
      return new ArrayReader(of(array.elementType()), array.containsNull());
    }
    if (type instanceof MapType map) {
      if (!(map.keyType() instanceof StringType)) {
        throw new IllegalArgumentException("a JSON object's keys are strings: " + map.simpleString());
      }
      return new MapReader(of(map.valueType()), map.valueContainsNull());
    }
    if (type instanceof StructType struct) {
      return new Struct(struct);
    }
    throw new IllegalArgumentException("no JSON reader for " + type.simpleString());
  }

  /** A value of one token: `value` gives it, or null when the token cannot be one. */
  abstract static class Scalar extends Reader {
    Scalar(String expected) {
      super(expected);
    }

    abstract Object value(JsonParser p, JsonToken t, Context ctx) throws IOException;

    @Override
    final Object read(JsonParser p, JsonToken token, Context ctx, Path path) throws IOException {
      Object value = token.isScalarValue() ? value(p, token, ctx) : null;
      return value != null ? value : wrong(p, token, ctx, path);
    }
  }

  interface Narrow {
    Object apply(long value);
  }

  static Reader integral(String expected, long min, long max, Narrow narrow) {
    return new Scalar(expected) {
      @Override
      Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
        if (t != JsonToken.VALUE_NUMBER_INT) {
          return null; // 1.0 and "1" are not integers: a producer sending them is a bug to see
        }
        if (p.getNumberType() == JsonParser.NumberType.BIG_INTEGER) {
          return null;
        }
        long v = p.getLongValue();
        return v < min || v > max ? null : narrow.apply(v);
      }
    };
  }

  /** A decimal, exactly: a JSON number or a string holding one (JSON's lossless form). */
  static final class DecimalReader extends Scalar {
    private final int scale;
    private final int integerDigits;

    DecimalReader(DecimalType type) {
      super("a decimal(" + type.precision() + "," + type.scale() + ")");
      this.scale = type.scale();
      this.integerDigits = type.precision() - type.scale();
    }

    @Override
    Object value(JsonParser p, JsonToken t, Context ctx) throws IOException {
      BigDecimal d;
      if (t.isNumeric()) {
        d = p.getDecimalValue();
      } else if (t == JsonToken.VALUE_STRING) {
        try {
          d = new BigDecimal(ctx.strings.text(p).strip());
        } catch (NumberFormatException e) {
          return null;
        }
      } else {
        return null;
      }
      // Rounding would change an amount: a value with more decimals than the scale is refused.
      BigDecimal exact;
      try {
        exact = d.setScale(scale);
      } catch (ArithmeticException e) {
        return null;
      }
      return exact.precision() - exact.scale() > integerDigits && exact.signum() != 0 ? null : exact;
    }
  }

  static final class ArrayReader extends Reader {
    private final Reader element;
    private final boolean containsNull;

    ArrayReader(Reader element, boolean containsNull) {
      super("an array");
      this.element = element;
      this.containsNull = containsNull;
    }

    @Override
    Object read(JsonParser p, JsonToken token, Context ctx, Path path) throws IOException {
      if (token != JsonToken.START_ARRAY) {
        return wrong(p, token, ctx, path);
      }
      List<Object> values = new ArrayList<>();
      boolean ok = true;
      JsonToken t;
      while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
        Path at = path.at(values.size());
        Object v;
        if (t == JsonToken.VALUE_NULL) {
          v = containsNull ? null : missing(ctx, at);
        } else {
          v = element.read(p, t, ctx, at);
        }
        ok &= v != WRONG;
        values.add(v == WRONG ? null : v);
      }
      return ok ? values : WRONG;
    }
  }

  static final class MapReader extends Reader {
    private final Reader value;
    private final boolean valueContainsNull;

    MapReader(Reader value, boolean valueContainsNull) {
      super("an object");
      this.value = value;
      this.valueContainsNull = valueContainsNull;
    }

    @Override
    Object read(JsonParser p, JsonToken token, Context ctx, Path path) throws IOException {
      if (token != JsonToken.START_OBJECT) {
        return wrong(p, token, ctx, path);
      }
      Map<String, Object> values = new HashMap<>();
      boolean ok = true;
      Path outer = ctx.where;
      ctx.where = path;
      while (p.nextToken() == JsonToken.FIELD_NAME) {
        String key = ctx.strings.name(p);
        Path at = new Path(path, key);
        JsonToken t = p.nextToken();
        Object v;
        if (t == JsonToken.VALUE_NULL) {
          v = valueContainsNull ? null : missing(ctx, at);
        } else {
          v = value.read(p, t, ctx, at);
        }
        ok &= v != WRONG;
        values.put(key, v == WRONG ? null : v);
        ctx.where = path;
      }
      ctx.where = outer;
      return ok ? values : WRONG;
    }
  }

  static Object missing(Context ctx, Path path) {
    if (ctx.error == null) {
      ctx.error = "missing " + path;
    }
    return WRONG;
  }

  /** An object with declared fields; the record itself is one. */
  static class Struct extends Reader {
    private final String[] names;
    private final Reader[] readers;
    private final boolean[] required;
    private final Map<String, Integer> slots = new HashMap<>();

    Struct(StructType type) {
      super("an object");
      StructField[] fields = type.fields();
      names = new String[fields.length];
      readers = new Reader[fields.length];
      required = new boolean[fields.length];
      for (int i = 0; i < fields.length; i++) {
        names[i] = fields[i].name();
        readers[i] = of(fields[i].dataType());
        required[i] = !fields[i].nullable();
        slots.put(names[i], i);
      }
    }

    @Override
    Object read(JsonParser p, JsonToken token, Context ctx, Path path) throws IOException {
      if (token != JsonToken.START_OBJECT) {
        return wrong(p, token, ctx, path);
      }
      Object[] values = fields(p, ctx, path);
      return values == null ? WRONG : RowFactory.create(values);
    }

    /** The fields of the object just started, in the schema's order; null when refused. */
    Object[] fields(JsonParser p, Context ctx, Path path) throws IOException {
      Object[] values = new Object[names.length];
      String[] errors = null;
      boolean[] present = new boolean[names.length];
      Path outer = ctx.where;
      ctx.where = path;
      while (p.nextToken() == JsonToken.FIELD_NAME) {
        String name = ctx.strings.name(p);
        JsonToken t = p.nextToken();
        Integer slot = slots.get(name);
        Path at = new Path(path, name);
        if (slot == null) {
          ctx.rescue(p, t, at);
        } else if (t != JsonToken.VALUE_NULL) {
          // Each field's own verdict, so that the record's is the first in the schema's order.
          String before = ctx.error;
          ctx.error = null;
          Object v = readers[slot].read(p, t, ctx, at);
          if (v == null && required[slot]) {
            // Rescued, but a required field cannot be left null: the record is refused.
            ctx.error = "wrong type: " + at + " must be " + readers[slot].expected;
            v = WRONG;
          }
          if (v == WRONG) {
            errors = errors == null ? new String[names.length] : errors;
            errors[slot] = ctx.error;
          } else {
            values[slot] = v;
            present[slot] = v != null;
          }
          ctx.error = before;
        }
        ctx.where = path;
      }
      ctx.where = outer;
      String verdict = null;
      for (int i = 0; i < names.length && verdict == null; i++) {
        if (errors != null && errors[i] != null) {
          verdict = errors[i];
        } else if (required[i] && !present[i]) {
          verdict = "missing " + new Path(path, names[i]);
        }
      }
      if (verdict != null) {
        if (ctx.error == null) {
          ctx.error = verdict;
        }
        return null;
      }
      return values;
    }
  }

  /** The record: a struct at the top, read from its first token on. */
  static final class Record {
    final Struct struct;
    final boolean rescueWrongTypes;

    Record(Struct struct, boolean rescueWrongTypes) {
      this.struct = struct;
      this.rescueWrongTypes = rescueWrongTypes;
    }

    Object[] readTop(JsonParser p, Context ctx) throws IOException {
      Object[] values = struct.fields(p, ctx, null);
      return values == null ? new Object[struct.names.length] : values;
    }
  }

  static Record compile(StructType schema, boolean rescueWrongTypes) {
    return new Record(new Struct(schema), rescueWrongTypes);
  }
}
