package io.github.streamassets.udf;

import java.time.Instant;
import java.time.LocalDate;
import java.time.LocalDateTime;
import java.time.LocalTime;
import java.time.ZoneOffset;

/**
 * ISO-8601 text as JSON producers write it; no offset means UTC. Years 0001-9999. The
 * grammar is `yyyy-MM-dd[(T| )HH:mm[:ss[(.|,)fraction of 1-9 digits]]][Z|z|+HH[[:]mm]|-HH[[:]mm]]`,
 * read left to right by hand: each optional part starts with its own character, so one pass
 * decides, without the cost of a regular expression on every timestamp of every record.
 */
final class Iso8601 {
  /** The parts of one text; `hour` is -1 without a time, `zone` 0 without an offset. */
  private static final class Parts {
    int year;
    int month;
    int day;
    int hour = -1;
    int minute;
    int second;
    int micros;
    /** 0: no offset; 'Z': Z or z; '+' or '-': `offsetHours` and `offsetMinutes`. */
    char zone;
    int offsetHours;
    int offsetMinutes;
  }

  private Iso8601() {}

  static LocalDate date(String text) {
    Parts m = parts(text);
    if (m == null || m.hour >= 0 || m.zone != 0) {
      return null;
    }
    return localDate(m);
  }

  static Instant instant(String text) {
    Parts m = parts(text);
    LocalDateTime local = m == null ? null : localDateTime(m);
    if (local == null) {
      return null;
    }
    ZoneOffset offset = m.zone == 0 || m.zone == 'Z' ? ZoneOffset.UTC : offset(m);
    return offset == null ? null : local.toInstant(offset);
  }

  static LocalDateTime local(String text) {
    Parts m = parts(text);
    return m != null && m.zone == 0 ? localDateTime(m) : null;
  }

  /** The text's parts when it has the grammar's shape (values not yet checked), else null. */
  private static Parts parts(String s) {
    int n = s.length();
    if (n < 10 || s.charAt(4) != '-' || s.charAt(7) != '-') {
      return null;
    }
    Parts m = new Parts();
    m.year = digits(s, 0, 4);
    m.month = digits(s, 5, 2);
    m.day = digits(s, 8, 2);
    if ((m.year | m.month | m.day) < 0) {
      return null;
    }
    int i = 10;
    if (i < n && (s.charAt(i) == 'T' || s.charAt(i) == ' ')) {
      if (i + 6 > n || s.charAt(i + 3) != ':') {
        return null;
      }
      m.hour = digits(s, i + 1, 2);
      m.minute = digits(s, i + 4, 2);
      if ((m.hour | m.minute) < 0) {
        return null;
      }
      i += 6;
      if (i < n && s.charAt(i) == ':') {
        m.second = i + 3 <= n ? digits(s, i + 1, 2) : -1;
        if (m.second < 0) {
          return null;
        }
        i += 3;
        if (i < n && (s.charAt(i) == '.' || s.charAt(i) == ',')) {
          int from = ++i;
          while (i < n && isDigit(s.charAt(i))) {
            i++;
          }
          int count = i - from;
          if (count < 1 || count > 9) {
            return null;
          }
          // Spark keeps microseconds; digits beyond them are cut, as its own cast does.
          int micros = 0;
          for (int k = 0; k < 6; k++) {
            micros = micros * 10 + (k < count ? s.charAt(from + k) - '0' : 0);
          }
          m.micros = micros;
        }
      }
    }
    if (i < n) {
      char c = s.charAt(i);
      if (c == 'Z' || c == 'z') {
        m.zone = 'Z';
        i++;
      } else if (c == '+' || c == '-') {
        m.zone = c;
        m.offsetHours = i + 3 <= n ? digits(s, i + 1, 2) : -1;
        if (m.offsetHours < 0) {
          return null;
        }
        i += 3;
        int at = i < n && s.charAt(i) == ':' ? i + 1 : i;
        if (at + 2 <= n) {
          m.offsetMinutes = digits(s, at, 2);
          if (m.offsetMinutes < 0) {
            return null;
          }
          i = at + 2;
        } else if (at != i) {
          return null; // "+05:" is not an offset
        }
      } else {
        return null;
      }
    }
    return i == n ? m : null;
  }

  private static boolean isDigit(char c) {
    return c >= '0' && c <= '9';
  }

  /** The `count` ASCII digits at `from` as a number, or -1 when one is not a digit. */
  private static int digits(String s, int from, int count) {
    int v = 0;
    for (int k = from; k < from + count; k++) {
      char c = s.charAt(k);
      if (!isDigit(c)) {
        return -1;
      }
      v = v * 10 + (c - '0');
    }
    return v;
  }

  private static LocalDate localDate(Parts m) {
    if (m.year < 1) {
      return null;
    }
    try {
      return LocalDate.of(m.year, m.month, m.day);
    } catch (java.time.DateTimeException e) {
      return null;
    }
  }

  private static LocalDateTime localDateTime(Parts m) {
    LocalDate date = localDate(m);
    if (date == null) {
      return null;
    }
    if (m.hour < 0) {
      return m.zone == 0 ? date.atStartOfDay() : null;
    }
    try {
      return date.atTime(LocalTime.of(m.hour, m.minute, m.second, m.micros * 1000));
    } catch (java.time.DateTimeException e) {
      return null;
    }
  }

  private static ZoneOffset offset(Parts m) {
    int sign = m.zone == '-' ? -1 : 1;
    try {
      return ZoneOffset.ofHoursMinutes(sign * m.offsetHours, sign * m.offsetMinutes);
    } catch (RuntimeException e) {
      return null;
    }
  }
}
