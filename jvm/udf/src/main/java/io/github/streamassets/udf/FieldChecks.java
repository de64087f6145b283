package io.github.streamassets.udf;

import com.fasterxml.jackson.databind.JsonNode;
import java.time.Instant;
import java.time.LocalDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.unsafe.types.UTF8String;

/**
 * The declared checks of a record's top-level fields (stream_assets/records/checks.py), judged
 * on a record the schema accepted, in the order they were declared: the first that fails gives
 * the record's reason. Each check does in Java, on the value just read, what its Spark SQL
 * condition (`condition` in checks.py) says; a value that is absent (null) passes, since
 * whether a field may be absent is the schema's to say.
 */
final class FieldChecks {
  /** One check of one value; the value is the reader's Java value of the field's type. */
  interface Check {
    boolean holds(Object value);
  }

  static final FieldChecks NONE = new FieldChecks(new int[0], new Check[0], new String[0]);

  private final int[] slots;
  private final Check[] checks;
  private final String[] reasons;

  private FieldChecks(int[] slots, Check[] checks, String[] reasons) {
    this.slots = slots;
    this.checks = checks;
    this.reasons = reasons;
  }

  /** The checks of the spec's `checks` list (absent: none) against the schema's fields. */
  static FieldChecks compile(JsonNode specChecks, StructType schema) {
    if (specChecks == null || specChecks.isNull() || specChecks.size() == 0) {
      return NONE;
    }
    List<String> names = List.of(schema.fieldNames());
    int[] slots = new int[specChecks.size()];
    Check[] checks = new Check[slots.length];
    String[] reasons = new String[slots.length];
    List<JsonNode> all = new ArrayList<>();
    specChecks.forEach(all::add);
    for (int i = 0; i < slots.length; i++) {
      JsonNode spec = all.get(i);
      slots[i] = names.indexOf(spec.get("field").asText());
      if (slots[i] < 0) {
        throw new IllegalArgumentException("no field " + spec.get("field") + " to check");
      }
      reasons[i] = spec.get("reason").asText();
      String kind = spec.get("kind").asText();
      checks[i] = switch (kind) {
        case "text" -> text(spec.get("not_empty").asBoolean(),
            spec.get("no_control_characters").asBoolean(),
            spec.get("max_bytes").isNull() ? -1 : spec.get("max_bytes").asInt());
        case "years" -> years(spec.get("first").asInt(), spec.get("last").asInt());
        default -> throw new IllegalArgumentException("no field check " + kind);
      };
    }
    return new FieldChecks(slots, checks, reasons);
  }

  /** The reason of the first check the record's fields fail, or null when all hold. */
  String verdict(Object[] fields) {
    for (int i = 0; i < checks.length; i++) {
      Object value = fields[slots[i]];
      if (value != null && !checks[i].holds(value)) {
        return reasons[i];
      }
    }
    return null;
  }

  /**
   * A string not empty, without a control character (U+0000-U+001F and U+007F, what Java's
   * and so Spark's RLIKE '\p{Cntrl}' finds), of at most `maxBytes` bytes in UTF-8 (-1: any).
   */
  static Check text(boolean notEmpty, boolean noControl, int maxBytes) {
    return value -> {
      UTF8String s = (UTF8String) value;
      int n = s.numBytes();
      if (notEmpty && n == 0 || maxBytes >= 0 && n > maxBytes) {
        return false;
      }
      if (noControl) {
        // In UTF-8 these are single bytes, and no byte of a longer character is below 0x80.
        for (int i = 0; i < n; i++) {
          byte b = s.getByte(i);
          if (b >= 0 && b < 0x20 || b == 0x7f) {
            return false;
          }
        }
      }
      return true;
    };
  }

  /** An instant from the first instant of year `first` to the last microsecond of `last`, UTC. */
  static Check years(int first, int last) {
    Instant from = LocalDateTime.of(first, 1, 1, 0, 0).toInstant(ZoneOffset.UTC);
    Instant to = LocalDateTime.of(last, 12, 31, 23, 59, 59, 999_999_000)
        .toInstant(ZoneOffset.UTC);
    return value -> {
      Instant at = (Instant) value;
      return !at.isBefore(from) && !at.isAfter(to);
    };
  }
}
