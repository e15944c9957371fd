//! Number syntax of the exposition formats: Go's `ParseFloat` and `ParseInt`.
//!
//! Prometheus reads values with Go's `strconv.ParseFloat`, so the text format
//! accepts what it accepts: decimal and exponent forms, hexadecimal floats
//! (`0x1.8p3`), `Inf`/`Infinity` with an optional sign and `NaN`, the words
//! in any case. OpenMetrics takes the same words but no hexadecimal.

/// Parses a float the way Go's `strconv.ParseFloat(s, 64)` does.
///
/// `allow_hex` admits hexadecimal mantissas (text format only).
pub(crate) fn parse_go_float(token: &str, allow_hex: bool) -> Option<f64> {
    let bytes = token.as_bytes();
    let first = *bytes.first()?;
    // The common case: plain decimal digits, handled by the standard library
    // once the characters are known to be ones Go accepts as well.
    if first.is_ascii_digit() || first == b'.' || first == b'-' || first == b'+' {
        let (negative, unsigned) = match first {
            b'-' => (true, &token[1..]),
            b'+' => (false, &token[1..]),
            _ => (false, token),
        };
        let unsigned_bytes = unsigned.as_bytes();
        if unsigned_bytes
            .iter()
            .all(|&b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        {
            // Rust and Go agree on this alphabet: digits, one dot, one exponent.
            return token.parse::<f64>().ok();
        }
        if allow_hex
            && unsigned_bytes.len() > 2
            && unsigned_bytes[0] == b'0'
            && (unsigned_bytes[1] | 0x20) == b'x'
        {
            return parse_hex_float(&unsigned[2..]).map(|v| if negative { -v } else { v });
        }
        // A sign may precede the infinity words only, never NaN.
        if first == b'-' || first == b'+' {
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

/// Parses the part after `0x` of a Go hexadecimal float: hex digits with an
/// optional fraction, then a mandatory binary exponent `p±N`.
fn parse_hex_float(rest: &str) -> Option<f64> {
    let (mantissa_text, exponent_text) = rest.split_once(['p', 'P'])?;
    let (int_part, frac_part) = match mantissa_text.split_once('.') {
        Some((int_part, frac_part)) => (int_part, frac_part),
        None => (mantissa_text, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let exponent: i32 = exponent_text.parse().ok()?;
    // Keep the first 15 hex digits (60 bits) exactly; later digits only
    // shift the exponent. Doubles hold 53 bits, so this loses nothing that
    // the final rounding would keep, up to a sticky bit we ignore.
    let mut mantissa: u64 = 0;
    let mut binary_exponent: i64 = i64::from(exponent);
    let mut n_digits = 0;
    for (index, byte) in int_part.bytes().chain(frac_part.bytes()).enumerate() {
        let digit = u64::from(char::from(byte).to_digit(16)?);
        let in_fraction = index >= int_part.len();
        if n_digits < 15 {
            if mantissa != 0 || digit != 0 {
                n_digits += 1;
            }
            mantissa = mantissa * 16 + digit;
            if in_fraction {
                binary_exponent -= 4;
            }
        } else if !in_fraction {
            binary_exponent += 4;
        }
    }
    let exponent = i32::try_from(binary_exponent.clamp(-2000, 2000)).ok()?;
    // Scale in two steps so that subnormal results do not underflow early.
    #[allow(
        clippy::cast_precision_loss,
        reason = "mantissa has at most 60 bits; rounding is the point"
    )]
    let value = mantissa as f64;
    let half = exponent / 2;
    Some(value * 2f64.powi(half) * 2f64.powi(exponent - half))
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
        let cases: &[(&str, bool, Option<f64>)] = &[
            ("1", false, Some(1.0)),
            ("-2.5e3", false, Some(-2500.0)),
            ("+7", false, Some(7.0)),
            (".5", false, Some(0.5)),
            ("5.", false, Some(5.0)),
            ("1E-3", false, Some(0.001)),
            ("+Inf", false, Some(f64::INFINITY)),
            ("-inf", false, Some(f64::NEG_INFINITY)),
            ("Infinity", false, Some(f64::INFINITY)),
            ("-INFINITY", false, Some(f64::NEG_INFINITY)),
            ("0x1p-2", true, Some(0.25)),
            ("0x1.8p3", true, Some(12.0)),
            ("-0X10P0", true, Some(-16.0)),
            ("0x.8p1", true, Some(1.0)),
            ("0x1p-2", false, None),
            ("0x1", true, None),
            ("0xp1", true, None),
            ("+NaN", false, None),
            ("-nan", false, None),
            ("1_000", false, None),
            ("", false, None),
            ("1e", false, None),
            ("e1", false, None),
            ("--1", false, None),
            ("1.2.3", false, None),
            ("12a", false, None),
            ("in", false, None),
            ("infinit", false, None),
        ];
        for &(token, hex, expected) in cases {
            assert_eq!(parse_go_float(token, hex), expected, "{token}");
        }
        assert!(parse_go_float("NaN", false).is_some_and(f64::is_nan));
        assert!(parse_go_float("nan", false).is_some_and(f64::is_nan));
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
