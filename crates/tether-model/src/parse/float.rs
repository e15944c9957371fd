//! Number syntax of the exposition formats, as Prometheus reads it.
//!
//! Prometheus reads values with Go's `strconv.ParseFloat` but refuses the
//! forms Go added later (hexadecimal mantissas and `_` separators), so both
//! formats accept: decimal and exponent forms, `Inf`/`Infinity` with an
//! optional sign, and `NaN`, the words in any case. A number too large for a
//! double is an error, as it is in Go, not an infinity.

/// Parses a sample value or label float the way Prometheus does.
pub(crate) fn parse_go_float(token: &str) -> Option<f64> {
    let bytes = token.as_bytes();
    let first = *bytes.first()?;
    if first.is_ascii_digit() || first == b'.' || first == b'-' || first == b'+' {
        let unsigned = match first {
            b'-' | b'+' => &token[1..],
            _ => token,
        };
        if unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            // Rust and Go agree on this alphabet: digits, one dot, one
            // exponent. Only Go reports overflow, as a range error.
            return token.parse::<f64>().ok().filter(|v| v.is_finite());
        }
        // A sign may precede the infinity words only, never NaN.
        if first == b'-' || first == b'+' {
            let negative = first == b'-';
            return parse_infinity(unsigned).map(|v| if negative { -v } else { v });
        }
        return None;
    }
    if token.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    parse_infinity(token)
}

fn parse_infinity(word: &str) -> Option<f64> {
    (word.eq_ignore_ascii_case("inf") || word.eq_ignore_ascii_case("infinity"))
        .then_some(f64::INFINITY)
}

/// Parses a timestamp of the text format: a decimal int64 of milliseconds.
pub(crate) fn parse_go_int(token: &str) -> Option<i64> {
    let bytes = token.as_bytes();
    let digits = match bytes.first()? {
        b'+' | b'-' => &bytes[1..],
        _ => bytes,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_syntax() {
        let cases: &[(&str, Option<f64>)] = &[
            ("1", Some(1.0)),
            ("-2.5e3", Some(-2500.0)),
            ("+7", Some(7.0)),
            (".5", Some(0.5)),
            ("5.", Some(5.0)),
            ("1E-3", Some(0.001)),
            ("+Inf", Some(f64::INFINITY)),
            ("-inf", Some(f64::NEG_INFINITY)),
            ("Infinity", Some(f64::INFINITY)),
            ("-INFINITY", Some(f64::NEG_INFINITY)),
            ("0x1p-2", None),
            ("+NaN", None),
            ("-nan", None),
            ("1_000", None),
            ("", None),
            ("1e", None),
            ("e1", None),
            ("--1", None),
            ("1.2.3", None),
            ("12a", None),
            ("in", None),
            ("infinit", None),
            ("0x1p-2", None),
            ("0x10", None),
            ("1e400", None),
            ("-1e400", None),
            ("1e-400", Some(0.0)),
        ];
        for &(token, expected) in cases {
            assert_eq!(parse_go_float(token), expected, "{token}");
        }
        assert!(parse_go_float("NaN").is_some_and(f64::is_nan));
        assert!(parse_go_float("nan").is_some_and(f64::is_nan));
    }

    #[test]
    fn go_int_syntax() {
        assert_eq!(parse_go_int("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(parse_go_int("-5"), Some(-5));
        assert_eq!(parse_go_int("+5"), Some(5));
        assert_eq!(parse_go_int("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_go_int("9223372036854775808"), None);
        assert_eq!(parse_go_int("1.5"), None);
        assert_eq!(parse_go_int("1e3"), None);
        assert_eq!(parse_go_int("-"), None);
        assert_eq!(parse_go_int(""), None);
    }
}
