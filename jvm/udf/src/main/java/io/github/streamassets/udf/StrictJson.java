package io.github.streamassets.udf;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParseException;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadFeature;
import java.io.IOException;

/**
 * What the project's parsers count as JSON (docs/guarantees.md): Jackson's defaults and limits
 * (no single quotes, NaN, comments, leading zeros), no duplicate key at any depth, no lone
 * surrogate escape, every string and number decoded even where nobody reads it.
 */
final class StrictJson {
  // One factory for all records: Jackson's factories are thread-safe and costly to build.
  static final JsonFactory FACTORY =
      JsonFactory.builder().enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION).build();

  private StrictJson() {}

  /**
   * Reads one value to its end, decoding every string and number as the VARIANT parser does, so
   * that a malformed one inside a field nobody reads is still invalid JSON.
   */
  static void skip(JsonParser p, JsonToken first, Strings read) throws IOException {
    int depth = 0;
    JsonToken t = first;
    while (true) {
      if (t == null) {
        throw new JsonParseException(p, "unexpected end of input");
      }
      switch (t) {
        case START_OBJECT, START_ARRAY -> depth++;
        case END_OBJECT, END_ARRAY -> depth--;
        case FIELD_NAME -> read.name(p);
        case VALUE_STRING -> read.text(p);
        case VALUE_NUMBER_INT, VALUE_NUMBER_FLOAT -> p.getNumberValue();
        default -> { }
      }
      if (depth == 0) {
        return;
      }
      t = p.nextToken();
    }
  }

  /** Reads strings; Spark's VARIANT parser refuses a lone surrogate, which only an escape makes. */
  enum Strings {
    PLAIN,
    ESCAPED;

    /** Valid UTF-8 holds no surrogate, so only a \\u escape in the text can make a lone one. */
    static Strings of(String text) {
      return text.indexOf("\\u") < 0 ? PLAIN : ESCAPED;
    }

    String text(JsonParser p) throws IOException {
      return checked(p, p.getText());
    }

    String name(JsonParser p) throws IOException {
      return checked(p, p.currentName());
    }

    private String checked(JsonParser p, String s) throws IOException {
      if (this == ESCAPED) {
        for (int i = 0; i < s.length(); i++) {
          char c = s.charAt(i);
          if (Character.isHighSurrogate(c) && i + 1 < s.length()
              && Character.isLowSurrogate(s.charAt(i + 1))) {
            i++;
          } else if (Character.isSurrogate(c)) {
            throw new JsonParseException(p, "lone surrogate");
          }
        }
      }
      return s;
    }
  }
}
